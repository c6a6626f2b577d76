"""LoRA through peft: what trains, and that merging changes no output."""

from __future__ import annotations

import torch
from vla_helpers import INSTRUCTIONS, model_inputs

from vla_policies import OpenVLAOFTForActionPrediction, build_model


def _logits(model, processor, seed=0):
    with torch.no_grad():
        out = model(**model_inputs(processor, INSTRUCTIONS[:2], seed=seed))
    return out.action_logits, out.values


def _perturb_lora(model, scale=0.05):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_only_lora_and_value_head_train(tiny_model, processor):
    before = _logits(tiny_model, processor)
    tiny_model.add_lora(rank=4)
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or n.startswith("value_head.") for n in trainable)
    assert any(n.startswith("value_head.") for n in trainable)
    # adapters everywhere RLinf puts them: ViTs, projector, Llama attention/MLP and the LM head
    for part in ("featurizer.blocks.0.attn.qkv", "fused_featurizer.blocks.1.mlp.fc2", "projector.fc3",
                 "self_attn.q_proj", "mlp.down_proj", "lm_head"):
        assert any(part in n for n in trainable), part
    # gaussian init leaves B = 0: the model is unchanged
    after = _logits(tiny_model, processor)
    torch.testing.assert_close(before[0], after[0])
    torch.testing.assert_close(before[1], after[1])


def test_merge_and_unmerge_leave_outputs_equal(tiny_model, processor):
    tiny_model.add_lora(rank=4, alpha=8)
    _perturb_lora(tiny_model)
    unmerged = _logits(tiny_model, processor)
    base_weight = tiny_model.language_model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    tiny_model.merge_lora()
    assert not torch.equal(tiny_model.language_model.model.layers[0].self_attn.q_proj.base_layer.weight, base_weight)
    merged = _logits(tiny_model, processor)
    torch.testing.assert_close(merged[0], unmerged[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged[1], unmerged[1], rtol=1e-4, atol=1e-5)
    tiny_model.unmerge_lora()
    again = _logits(tiny_model, processor)
    torch.testing.assert_close(again[0], unmerged[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tiny_model.language_model.model.layers[0].self_attn.q_proj.base_layer.weight,
                               base_weight, rtol=1e-5, atol=1e-6)
    assert unmerged[0].sub(_logits(build_model(tiny_model.config).eval(), processor)[0]).abs().max() > 0


def test_saved_lora_model_is_merged_in_the_released_layout(tiny_model, processor, tmp_path):
    tiny_model.add_lora(rank=4)
    _perturb_lora(tiny_model)
    expected = _logits(tiny_model, processor)
    exported = tiny_model.export_state_dict()
    assert not any("lora_" in k or "base_layer" in k for k in exported)
    tiny_model.save_pretrained(tmp_path / "merged", processor=processor)
    loaded = OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "merged")
    assert not loaded.has_lora
    got = _logits(loaded, processor)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-5)
    assert tiny_model.has_lora  # saving did not merge the live model
    assert not any(layer.merged for layer in tiny_model._lora_layers())


def test_lora_gradients_reach_only_trainable_parameters(tiny_model, processor):
    tiny_model.add_lora(rank=2, target_modules=["q_proj", "v_proj"])
    tiny_model.train()
    out = tiny_model(**model_inputs(processor, INSTRUCTIONS[:1]))
    (out.action_logits.logsumexp(-1).mean() + out.values.sum()).backward()
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert all(("q_proj" in n or "v_proj" in n or n.startswith("value_head.")) for n, p in
               tiny_model.named_parameters() if p.requires_grad)
