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

    def capture(self, model, inputs, padded, fused):
        entry = real_capture(self, model, inputs, padded, fused)
        graph = captured[-1]
        graph.output = entry.output
        graph.run = lambda: model._forward(entry.inputs["pixel_values"], entry.inputs["input_ids"],
                                           entry.inputs["attention_mask"], None, padded, fused=fused)
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


def _fused_model(config, **text_overrides):
    config.text_config = {**config.text_config, **text_overrides}
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():  # non-zero biases, so that their concatenation is checked too
        for name, p in model.language_model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(std=0.1)
    return model


@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 2}],
                         ids=["llama", "bias-gqa"])
def test_fused_projections_match_the_reference_forward(tiny_config, processor, overrides):
    model = _fused_model(tiny_config, **overrides)
    batches = [model_inputs(processor, TEXTS, seed=1), model_inputs(processor, ["go", "go"], seed=2)]
    expected = _outputs(model, batches)
    model.enable_fast_inference(compile=False)
    got = _outputs(model, batches)
    n_layers = len(model.language_model.model.layers)
    assert model._fast_inference._fused.num_fused == 2 * n_layers  # every layer: q/k/v and gate/up
    _assert_same(got, expected)
    model.enable_fast_inference(compile=False, fuse_projections=False)
    _assert_same(_outputs(model, batches), expected)
    assert model._fast_inference._fused is None


def test_fused_weights_follow_weight_updates_and_lora(tiny_model, processor):
    batches = [model_inputs(processor, TEXTS, seed=1)]
    tiny_model.enable_fast_inference(compile=False)
    _outputs(tiny_model, batches)
    fast = tiny_model._fast_inference
    fused = fast._fused
    qkv_weight = fused.layers[0][0][0]

    def check():
        # the fast path (fused) against the eager forward of the model as it is now
        got = _outputs(tiny_model, batches)
        tiny_model._fast_inference = None
        expected = _outputs(tiny_model, batches)
        tiny_model._fast_inference = fast
        _assert_same(got, expected)

    # in place (load_state_dict copies into the parameters): refreshed in place, same tensors
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in tiny_model.state_dict().items() if "layers.0." in k}
    tiny_model.load_state_dict(state, strict=False)
    check()
    assert fast._fused is fused and fused.layers[0][0][0] is qkv_weight
    with torch.no_grad():  # an optimizer-style in-place step
        tiny_model.language_model.model.layers[1].mlp.up_proj.weight.mul_(1.5)
    check()
    assert fast._fused is fused
    # a replaced tensor: rebuilt
    gate = tiny_model.language_model.model.layers[0].mlp.gate_proj
    gate.weight.data = gate.weight.data * 2
    check()
    assert fast._fused is not fused and fast._fused.num_fused == 4
    # LoRA on every Llama projection: the model drops the fused weights; those layers run unfused
    tiny_model.add_lora(rank=2, init_lora_weights=False)  # random B: the adapters change the outputs
    assert fast._fused is None
    check()
    assert fast._fused.num_fused == 0
    tiny_model.merge_lora()
    assert fast._fused is None
    check()
    tiny_model.unmerge_lora()
    check()


def test_lora_outside_the_llama_projections_keeps_them_fused(tiny_model, processor):
    batches = [model_inputs(processor, TEXTS, seed=1)]
    tiny_model.enable_fast_inference(compile=False)
    tiny_model.add_lora(rank=2, target_modules=["o_proj", "down_proj", "fc1"], init_lora_weights=False)
    got = _outputs(tiny_model, batches)
    assert tiny_model._fast_inference._fused.num_fused == 4
    tiny_model.disable_fast_inference()
    _assert_same(got, _outputs(tiny_model, batches))


def test_a_failing_cudnn_attention_falls_back(tiny_model, processor, monkeypatch):
    # CPU stand-in: "preferring cuDNN" makes every SDPA call fail, as a cuDNN error would
    import contextlib

    import torch.nn.functional as F

    from vla_policies.openvla_oft import fast_inference as fi

    def broken(*args, **kwargs):
        raise RuntimeError("cuDNN Frontend error: no execution plan")

    @contextlib.contextmanager
    def prefer_broken_cudnn():
        with monkeypatch.context() as m:
            m.setattr(F, "scaled_dot_product_attention", broken)
            yield

    monkeypatch.setattr(fi, "_prefer_cudnn_attention", prefer_broken_cudnn)
    batches = [model_inputs(processor, ["go", "go"], seed=2)]
    expected = _outputs(tiny_model, batches)
    tiny_model.enable_fast_inference(compile=False)
    assert not tiny_model._fast_inference.cudnn_attention  # default: only on CUDA
    tiny_model._fast_inference.cudnn_attention = True
    _assert_same(_outputs(tiny_model, batches), expected)
    assert not tiny_model._fast_inference.cudnn_attention
