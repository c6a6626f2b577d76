"""FP8 fast inference: rowwise quantization, the FP8 linear, which layers are replaced, the way back."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vla_helpers import model_inputs

from vla_policies import build_model
from vla_policies.openvla_oft.fp8 import (
    E4M3_MAX,
    FP8_DTYPE,
    Float8Linear,
    check_fp8_device,
    dequantize_rowwise,
    fp8_linear,
    fp8_unsupported_reason,
    quantize_rowwise,
)

TEXTS = ["go", "open the top drawer of the kitchen cabinet", "stack the blocks"]
CPU_FP8 = fp8_unsupported_reason(torch.device("cpu")) is None
needs_cpu_fp8 = pytest.mark.skipif(not CPU_FP8, reason="this torch has no CPU float8 _scaled_mm")
LLAMA_PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def test_quantize_rowwise_scales_round_trip_zero_rows_and_clamp():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 64, generator=g) * torch.tensor([1e-3, 1.0, 30.0, 1e4, 1.0, 1.0])[:, None]
    x[4] = 0.0  # a zero row
    x[5, 7] = 1e6  # one outlier: the rest of its row lands in e4m3's subnormals
    q, scale = quantize_rowwise(x)
    assert q.dtype == FP8_DTYPE and scale.dtype == torch.float32 and scale.shape == (6, 1)
    amax = x.abs().amax(-1, keepdim=True)
    torch.testing.assert_close(scale[[0, 1, 2, 3, 5]], amax[[0, 1, 2, 3, 5]] / E4M3_MAX)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    back = dequantize_rowwise(q, scale)
    # e4m3: 3 mantissa bits (relative error <= 2^-4), subnormal spacing 2^-9 of the scale
    assert ((back - x).abs() <= x.abs() * 2**-4 + scale * 2**-9).all()
    assert torch.equal(back[4], torch.zeros(64)) and not torch.isnan(q.float()).any()
    assert (q.float().abs().amax(-1)[[0, 1, 2, 3, 5]] == E4M3_MAX).all()  # each row's amax maps to 448
    # values beyond 448 * scale (a scale from another tensor) are clamped, not NaN or wrapped
    big = torch.tensor([[1.0, -2.0, 3.0]])
    clamped = (big / torch.tensor([[1 / 448]])).clamp(-E4M3_MAX, E4M3_MAX).to(FP8_DTYPE)
    assert clamped.float().tolist() == [[448.0, -448.0, 448.0]]


def test_emulated_fp8_linear_is_close_to_the_linear():
    torch.manual_seed(0)
    linear = nn.Linear(128, 96)
    x = torch.randn(2, 5, 128)
    layer = Float8Linear.from_linear(linear, emulate=True)
    assert layer.weight.dtype == FP8_DTYPE and layer.weight_scale.shape == (1, 96)
    with torch.no_grad():
        expected, got = linear(x), layer(x)
    assert got.shape == expected.shape
    rel = (got - expected).norm() / expected.norm()
    assert rel < 0.05, rel  # two FP8 roundings (~2-3 % each, partly averaging out)
    back = layer.to_linear(torch.float32)
    torch.testing.assert_close(back.weight, dequantize_rowwise(layer.weight, layer.weight_scale.t()))


@needs_cpu_fp8
@pytest.mark.parametrize("bias", [False, True])
def test_scaled_mm_path_matches_the_emulated_one(bias):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=bias)
    x = torch.randn(7, 64)
    layer = Float8Linear.from_linear(linear)
    with torch.no_grad():
        expected = fp8_linear(x, layer.weight, layer.weight_scale, layer.bias, emulate=True)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_unsupported_devices_name_the_requirement(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ValueError, match=r"compute capability 8.9 or newer.*A100 has compute capability 8.0"):
        check_fp8_device(torch.device("cuda"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_fp8_device(torch.device("cuda"), torch.bfloat16)
    with pytest.raises(ValueError, match="needs the model in bfloat16"):
        check_fp8_device(torch.device("cuda"), torch.float32)
    assert "CUDA" in fp8_unsupported_reason(torch.device("meta"))


def test_enable_fp8_without_a_float8_kernel_raises(tiny_model, monkeypatch):
    def no_fp8(*args, **kwargs):
        raise RuntimeError("_scaled_mm is not implemented for CPU")

    monkeypatch.setattr(torch, "_scaled_mm", no_fp8)
    with pytest.raises(ValueError, match="fp8=True needs a CUDA GPU of compute capability 8.9"):
        tiny_model.enable_fast_inference(compile=False, fp8=True)
    assert tiny_model._fast_inference is None
    assert type(tiny_model.language_model.model.layers[0].self_attn.q_proj) is nn.Linear
    with pytest.raises(ValueError, match="needs fp8=True"):
        tiny_model.enable_fast_inference(compile=False, fp8_vision=True)


def _model(config, **text_overrides):
    # intermediate_size 352 (tiny's 344 is not a multiple of 16, so its MLP stays bfloat16)
    config.text_config = {**config.text_config, "intermediate_size": 352, **text_overrides}
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for name, p in model.language_model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(std=0.1)
    return model


def _fp8_names(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, Float8Linear))


@needs_cpu_fp8
@pytest.mark.parametrize("vision", [False, True])
def test_replacement_covers_exactly_the_intended_layers(tiny_config, tiny_model, vision):
    n_layers = tiny_config.text_config["num_hidden_layers"]
    # tiny: the Llama's intermediate_size 344 and SigLIP's MLP width 239 are not multiples of 16: those
    # layers stay as they are; SigLIP's attention-pool head is not part of the blocks
    expected = [f"language_model.model.layers.{i}.self_attn.{p}_proj" for i in range(n_layers) for p in "qkvo"]
    if vision:
        for prefix in ("featurizer", "fused_featurizer"):
            expected += [f"vision_backbone.{prefix}.blocks.{i}.attn.{p}" for i in range(2) for p in ("qkv", "proj")]
        expected += [f"vision_backbone.featurizer.blocks.{i}.mlp.fc{j}" for i in range(2) for j in (1, 2)]
    tiny_model.enable_fast_inference(compile=False, fp8=True, fp8_vision=vision)
    assert _fp8_names(tiny_model) == sorted(expected)
    assert tiny_model.vision_backbone.fused_featurizer.blocks[0].mlp.fc1.out_features == 239
    layer = tiny_model.language_model.model.layers[0]
    assert all(type(getattr(layer.mlp, p)) is nn.Linear for p in ("gate_proj", "up_proj", "down_proj"))
    for kept in (tiny_model.language_model.lm_head, tiny_model.value_head.mlp[0], tiny_model.projector.fc1):
        assert type(kept) is nn.Linear and kept.weight.dtype == torch.float32
    # no high-precision copy stays: q/k/v are views of one fused FP8 weight
    qkv_weight = tiny_model._fast_inference.fused_layers(tiny_model)[0][0][0]
    assert qkv_weight.dtype == FP8_DTYPE
    assert layer.self_attn.k_proj.weight.untyped_storage().data_ptr() == qkv_weight.untyped_storage().data_ptr()
    tiny_model.disable_fast_inference()
    assert _fp8_names(tiny_model) == []


@needs_cpu_fp8
@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 2}],
                         ids=["llama", "bias-gqa"])
def test_fp8_forward_stays_close_to_the_model(tiny_config, processor, overrides):
    model = _model(tiny_config, **overrides)
    batches = [model_inputs(processor, TEXTS, seed=1), model_inputs(processor, ["go", "go"], seed=2)]
    with torch.no_grad():
        expected = [model(**b) for b in batches]
    # compiled regions (aot_eager, fullgraph: no graph break around the FP8 GEMMs), fused and unfused
    for fuse in (True, False):
        model.enable_fast_inference(backend="aot_eager", fullgraph=True, fp8=True, fuse_projections=fuse)
        assert len(_fp8_names(model)) == 7 * tiny_config.text_config["num_hidden_layers"]
        with torch.no_grad():
            got = [model(**b) for b in batches]
        for g, e in zip(got, expected):
            scale = e.action_logits.abs().max()
            assert (g.action_logits - e.action_logits).abs().max() < 0.1 * scale
            assert (g.action_logits.argmax(-1) == e.action_logits.argmax(-1)).float().mean() > 0.9
            torch.testing.assert_close(g.values, e.values, rtol=0.1, atol=0.05 * e.values.abs().max().item())
    # back to bfloat16/float32 nn.Linear layers with FP8-rounded weights: usable, trainable
    model.disable_fast_inference()
    assert _fp8_names(model) == []
    model.train()
    model(**batches[1]).values.sum().backward()
    assert model.language_model.model.layers[0].self_attn.q_proj.weight.grad is not None


@needs_cpu_fp8
def test_fp8_model_is_inference_only_and_requantizes_loaded_weights(tiny_config, processor):
    model = _model(tiny_config)
    batch = model_inputs(processor, TEXTS, seed=1)
    state = {k: v + 0.01 * torch.randn_like(v) for k, v in model.state_dict().items() if "layers.0." in k}
    model.enable_fast_inference(compile=False, fp8=True)
    fused = model._fast_inference.fused_layers(model)[0][0][0]
    model.load_state_dict(state, strict=False)  # bfloat16/float32 weights: quantized into the FP8 buffers
    assert model._fast_inference.fused_layers(model)[0][0][0] is fused
    with torch.no_grad():
        got = model(**batch)
    fresh = _model(tiny_config)
    fresh.load_state_dict(state, strict=False)
    fresh.enable_fast_inference(compile=False, fp8=True)
    with torch.no_grad():
        torch.testing.assert_close(got.action_logits, fresh(**batch).action_logits)
    model.to("cpu")  # a move to where it is: fine
    with pytest.raises(RuntimeError, match="cannot move or cast FP8 layers"):
        model.to(torch.float64)
    model.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        model(**batch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or fp8_unsupported_reason(torch.device("cuda")) is not None,
                    reason="needs a CUDA GPU of compute capability >= 8.9")
def test_cuda_fp8_matches_emulation_and_the_bf16_model(tiny_config, processor):
    model = _model(tiny_config, attention_bias=True).cuda().set_dtype(torch.bfloat16)
    batch = {k: v.cuda() for k, v in model_inputs(processor, TEXTS, seed=1).items()}
    with torch.no_grad():
        expected = model(**batch).action_logits
    model.enable_fast_inference(fp8=True, fp8_vision=True)
    with torch.no_grad():
        got = model(**batch).action_logits
        x = torch.randn(300, 128, device="cuda", dtype=torch.bfloat16)
        layer = model.language_model.model.layers[0].self_attn.q_proj
        torch.testing.assert_close(layer(x), fp8_linear(x, layer.weight, layer.weight_scale, layer.bias,
                                                        emulate=True), rtol=2e-2, atol=2e-2)
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


@needs_cpu_fp8
def test_lora_wrapped_layers_stay_whole(tiny_config, processor):
    # neither the base layer nor the adapters of a LoRA-wrapped projection become FP8 (peft casts the
    # input to the adapters' dtype: float8 adapters broke the forward pass); the other projections do
    model = _model(tiny_config)
    model.add_lora(rank=16, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False)
    batch = model_inputs(processor, TEXTS, seed=1)
    with torch.no_grad():
        expected = model(**batch)
    model.enable_fast_inference(compile=False, fp8=True)
    n_layers = tiny_config.text_config["num_hidden_layers"]
    assert _fp8_names(model) == sorted(f"language_model.model.layers.{i}.{p}" for i in range(n_layers)
                                       for p in ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    q = model.language_model.model.layers[0].self_attn.q_proj
    assert type(q.base_layer) is nn.Linear and q.lora_A["default"].weight.dtype == torch.float32
    with torch.no_grad():
        got = model(**batch)
    assert (got.action_logits - expected.action_logits).abs().max() < 0.1 * expected.action_logits.abs().max()
