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


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph on a CPU: replay re-runs what was 'captured' into its outputs."""

    def __init__(self):
        self.run = None
        self.output = None

    def replay(self):
        fresh = self.run()
        self.output.action_logits.copy_(fresh.action_logits)
        self.output.values.copy_(fresh.values)


def test_graph_bookkeeping_with_a_fake_cuda_graph(tiny_model, processor, monkeypatch):
    # the CUDA-graph path on a CPU: static input buffers, one graph per shape, outputs copied out
    import contextlib

    from vla_policies.openvla_oft import fast_inference as fi

    captured = []

    @contextlib.contextmanager
    def fake_graph(graph, pool=None):
        yield
        captured.append(graph)

    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: object())
    stream = type("FakeStream", (), {"wait_stream": lambda self, other: None})()
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    real_capture = fi.FastInference._capture

    def capture(self, model, inputs, padded):
        entry = real_capture(self, model, inputs, padded)
        graph = captured[-1]
        graph.output = entry.output
        graph.run = lambda: model._forward(entry.inputs["pixel_values"], entry.inputs["input_ids"],
                                           entry.inputs["attention_mask"], None, padded)
        return entry

    monkeypatch.setattr(fi.FastInference, "_capture", capture)
    batches = [model_inputs(processor, TEXTS, seed=1), model_inputs(processor, ["go"], seed=2),
               model_inputs(processor, TEXTS, seed=3)]
    expected = _outputs(tiny_model, batches)
    tiny_model.enable_fast_inference(compile=False, cuda_graphs=False, max_graphs=8)
    tiny_model._fast_inference.cuda_graphs = True
    got = _outputs(tiny_model, batches)
    _assert_same(got, expected)
    assert tiny_model._fast_inference.num_graphs == 2 and len(captured) == 2  # the third reused the first
    kept = got[2].action_logits.clone()
    _outputs(tiny_model, batches[:1])
    assert torch.equal(got[2].action_logits, kept)  # outputs are copies, not the graph's buffers
    tiny_model.to(torch.float32)  # moving or casting the model drops the graphs
    assert tiny_model._fast_inference.num_graphs == 0


def test_copies_of_the_model_start_eager(tiny_model):
    import copy

    tiny_model.enable_fast_inference(compile=False)
    clone = copy.deepcopy(tiny_model)
    assert clone._fast_inference is None and tiny_model._fast_inference is not None
    assert torch.equal(clone.projector.fc1.weight, tiny_model.projector.fc1.weight)
