"""Fast inference: compiled layer regions and CUDA graphs give the eager model's outputs."""

from __future__ import annotations

import pytest
import torch
from vla_helpers import model_inputs

from vla_policies import build_model

TEXTS = ["go", "open the top drawer of the kitchen cabinet", "stack the blocks"]


def _outputs(model, batches):
    with torch.no_grad():
        return [model(**b) for b in batches]


def _assert_same(got, expected, rtol=1e-5, atol=1e-5):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.action_logits, e.action_logits, rtol=rtol, atol=atol)
        torch.testing.assert_close(g.values, e.values, rtol=rtol, atol=atol)


def test_compiled_regions_trace_without_graph_breaks_and_match_eager(tiny_model, processor):
    # aot_eager: Dynamo's tracing and AOTAutograd without code generation (fast); fullgraph=True
    # fails on any graph break inside a ViT block or a Llama layer
    batches = [model_inputs(processor, TEXTS, seed=1), model_inputs(processor, ["go", "go"], seed=2)]
    assert (batches[0]["attention_mask"] == 0).any() and (batches[1]["attention_mask"] == 1).all()
    expected = _outputs(tiny_model, batches)
    tiny_model.enable_fast_inference(backend="aot_eager", fullgraph=True)
    _assert_same(_outputs(tiny_model, batches), expected)
    # training calls (gradients) run the eager model
    tiny_model.train()
    out = tiny_model(**batches[1])
    out.values.sum().backward()
    assert tiny_model.value_head.mlp[0].weight.grad is not None
    tiny_model.eval()
    tiny_model.disable_fast_inference()
    _assert_same(_outputs(tiny_model, batches), expected)


def test_cuda_graphs_need_cuda(tiny_model):
    with pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        tiny_model.enable_fast_inference(compile=False, cuda_graphs=True)
    tiny_model.enable_fast_inference(compile=False)  # default: graphs only on CUDA
    assert not tiny_model._fast_inference.cuda_graphs


@pytest.mark.slow
def test_inductor_on_cpu_matches_eager(tiny_model, processor):
    batches = [model_inputs(processor, TEXTS, seed=1), model_inputs(processor, ["go"], seed=2)]
    expected = _outputs(tiny_model, batches)
    tiny_model.enable_fast_inference(fullgraph=True)
    _assert_same(_outputs(tiny_model, batches), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_match_eager(tiny_config, processor, compile):
    torch.manual_seed(0)
    model = build_model(tiny_config, device="cuda").eval()
    batches = [{k: v.cuda() for k, v in model_inputs(processor, texts, seed=i).items()}
               for i, texts in enumerate([TEXTS, ["go"], TEXTS])]
    expected = _outputs(model, batches)
    model.enable_fast_inference(compile=compile)
    got = _outputs(model, batches)  # the third batch replays the first one's graph with new inputs
    _assert_same(got, expected, rtol=1e-4, atol=1e-4)
    assert model._fast_inference.num_graphs == 2
    kept = got[0].action_logits.clone()
    _outputs(model, batches[1:2])
    assert torch.equal(got[0].action_logits, kept)  # outputs are copies, not the graph's buffers
    model.add_lora(rank=2)  # a structural change drops the graphs
    assert model._fast_inference.num_graphs == 0
