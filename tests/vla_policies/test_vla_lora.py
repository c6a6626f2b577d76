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


def test_lora_head_logits_on_action_rows_equal_the_full_head(tiny_model):
    tiny_model.add_lora(rank=4)
    _perturb_lora(tiny_model)
    hidden = torch.randn(2, 5, tiny_model.config.hidden_size)
    head = tiny_model.language_model.get_output_embeddings()
    begin, end = tiny_model.action_tokenizer.token_begin, tiny_model.action_tokenizer.vocab_end
    with torch.no_grad():
        sliced = tiny_model.action_logits(hidden)
        full = head(hidden)[..., begin:end]
    assert sliced.dtype == torch.float32
    torch.testing.assert_close(sliced, full, rtol=1e-5, atol=1e-5)


def _perturb_heads(model):
    with torch.no_grad():
        for p in model.value_head.parameters():
            p.add_(0.1)


def test_lora_adapter_saves_alone_in_peft_format_and_loads_on_its_base(tiny_model, processor, tmp_path):
    import json

    from safetensors.torch import load_file

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_model.save_pretrained(base_dir, processor=processor)
    tiny_model.add_lora(rank=4, alpha=8)
    _perturb_lora(tiny_model)
    _perturb_heads(tiny_model)
    expected = _logits(tiny_model, processor)
    tiny_model.save_lora_adapter(adapter_dir, base_model_path=base_dir)

    assert sorted(p.name for p in adapter_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["modules_to_save"] == ["value_head"] and config["base_model_name_or_path"] == "../base"
    keys = set(load_file(adapter_dir / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.") and ".default" not in k for k in keys)
    assert "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.value_head.mlp.0.weight" in keys
    assert not any(k.endswith("q_proj.weight") or "base_layer" in k for k in keys)  # no base weights
    n_lora = sum(1 for k in tiny_model.state_dict() if ".lora_" in k)
    assert len(keys) == n_lora + len(tiny_model.value_head.state_dict())

    for loaded in (OpenVLAOFTForActionPrediction.from_pretrained(base_dir, adapter_path=adapter_dir),
                   OpenVLAOFTForActionPrediction.from_pretrained(adapter_dir)):  # base found from the adapter
        assert loaded.has_lora and loaded.lora_config.r == 4
        got = _logits(loaded, processor)
        torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
        trainable = [n for n, p in loaded.named_parameters() if p.requires_grad]
        assert trainable and all(".lora_" in n or n.startswith("value_head.") for n in trainable)


def test_lora_adapter_keys_are_peft_keys(tiny_model):
    import warnings

    from peft import get_peft_model_state_dict

    from vla_policies.openvla_oft.checkpoint import PEFT_PREFIX, _peft_key

    tiny_model.add_lora(rank=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_keys = {PEFT_PREFIX + k for k in get_peft_model_state_dict(tiny_model)}
    ours = {_peft_key(k) for k in tiny_model.state_dict() if ".lora_" in k}
    assert ours == peft_keys


def test_lora_adapter_errors(tiny_model, processor, tmp_path):
    import pytest
    from safetensors.torch import load_file, save_file

    with pytest.raises(ValueError, match="no LoRA adapters"):
        tiny_model.save_lora_adapter(tmp_path / "none")
    base = build_model(tiny_model.config).eval()
    base.load_state_dict(tiny_model.state_dict())
    tiny_model.add_lora(rank=4)
    adapter = tmp_path / "adapter"
    tiny_model.save_lora_adapter(adapter)
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
        build_model(tiny_model.config).load_lora_adapter(tmp_path / "empty")
    weights = load_file(adapter / "adapter_model.safetensors")
    key = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
    bad = dict(weights, **{key: torch.zeros(3, weights[key].shape[1])})
    save_file(bad, adapter / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"shape mismatch for .*q_proj.lora_A.weight.*\(3, 128\).*\(4, 128\)"):
        build_model(tiny_model.config).load_lora_adapter(adapter)
    save_file(dict(weights, **{"base_model.model.projector.fc9.lora_A.weight": torch.zeros(4, 4)}),
              adapter / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="no place in this model"):
        build_model(tiny_model.config).load_lora_adapter(adapter)
    with pytest.raises(RuntimeError, match="already has LoRA"):
        tiny_model.load_lora_adapter(adapter)
