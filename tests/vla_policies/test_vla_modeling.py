"""The OpenVLA-OFT model: shapes, conditioning, padding invariance, vision features, presets."""

from __future__ import annotations

import time

import pytest
import torch
from vla_helpers import INSTRUCTIONS, model_inputs

from behavior_gym.spaces import ACTION_DIM
from vla_policies import OpenVLAOFTConfig, OpenVLAOFTForActionPrediction, build_model


def test_shapes_for_23d_chunks_of_8_with_3_images(tiny_model, processor):
    cfg = tiny_model.config
    assert (cfg.action_dim, cfg.num_action_chunks, cfg.num_images_in_input) == (ACTION_DIM, 8, 3)
    inputs = model_inputs(processor, INSTRUCTIONS[:2])
    assert inputs["pixel_values"].shape == (2, 3 * 6, 224, 224)
    with torch.no_grad():
        out = tiny_model(**inputs, output_hidden_states=True)
    assert out.action_logits.shape == (2, 23 * 8, 256)
    assert out.values.shape == (2,)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.last_hidden_state.shape[1] == prompt_len + 3 * 256 + 23 * 8
    assert tiny_model.num_image_tokens == 3 * 256


def test_images_and_instruction_change_the_action(tiny_model, processor):
    with torch.no_grad():
        base = tiny_model(**model_inputs(processor, ["pick up the red cup"], seed=0)).action_logits
        other_image = tiny_model(**model_inputs(processor, ["pick up the red cup"], seed=1)).action_logits
        other_text = tiny_model(**model_inputs(processor, ["open the drawer"], seed=0)).action_logits
    assert (base - other_image).abs().max() > 1e-3
    assert (base - other_text).abs().max() > 1e-3
    # each image matters, not only the head camera
    inputs = model_inputs(processor, ["pick up the red cup"], seed=0)
    inputs["pixel_values"][:, 12:] = 0  # blank the right wrist image
    with torch.no_grad():
        no_wrist = tiny_model(**inputs).action_logits
    assert (base - no_wrist).abs().max() > 1e-3


def test_batched_prompts_of_different_lengths_equal_unbatched(tiny_model, processor):
    texts = ["go", "open the top drawer of the kitchen cabinet and put the spoon inside", "stack the blocks"]
    lengths = {len(processor.encode_instruction(t)) for t in texts}
    assert len(lengths) == 3
    batch = model_inputs(processor, texts, seed=3)
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = tiny_model(**batch)
        for i, text in enumerate(texts):
            single = {"pixel_values": batch["pixel_values"][i:i + 1],
                      **dict(zip(("input_ids", "attention_mask"), processor.tokenize([text])))}
            one = tiny_model(**single)
            torch.testing.assert_close(out.action_logits[i:i + 1], one.action_logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.values[i:i + 1], one.values, rtol=1e-4, atol=1e-5)


def test_eager_attention_matches_sdpa(tiny_config, processor):
    torch.manual_seed(0)
    sdpa = build_model(tiny_config).eval()
    eager = build_model(tiny_config.replace(attn_implementation="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    inputs = model_inputs(processor, ["go", "stack the blocks"], seed=4)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(**inputs).action_logits, eager(**inputs).action_logits, rtol=1e-4, atol=1e-5)


def test_attention_is_bidirectional(tiny_model, processor):
    # a change to the last placeholder position can only reach earlier positions without a causal mask
    inputs = model_inputs(processor, ["stack the blocks"])
    embeds, mask = tiny_model.build_inputs(**inputs)
    assert embeds.shape[1] == mask.shape[1]
    assert torch.all(embeds[:, -23 * 8:] == 0)  # placeholders carry only their position
    with torch.no_grad():
        a = tiny_model.language_model.model(inputs_embeds=embeds, attention_mask=torch.zeros(1, 1, 1, mask.shape[1]),
                                            position_ids=torch.arange(mask.shape[1])[None]).last_hidden_state
        embeds2 = embeds.clone()
        embeds2[:, -1] += 1.0
        b = tiny_model.language_model.model(inputs_embeds=embeds2, attention_mask=torch.zeros(1, 1, 1, mask.shape[1]),
                                            position_ids=torch.arange(mask.shape[1])[None]).last_hidden_state
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6


def test_vision_features_come_from_the_second_to_last_block(tiny_model):
    backbone = tiny_model.vision_backbone
    x = torch.randn(2, 6, 224, 224)
    with torch.no_grad():
        feats = backbone(x)
        expected = []
        for i, vit in enumerate(backbone.towers):
            h = vit.norm_pre(vit._pos_embed(vit.patch_embed(x[:, 3 * i:3 * i + 3])))
            for blk in vit.blocks[:-1]:
                h = blk(h)
            expected.append(h[:, vit.num_prefix_tokens:])
    assert feats.shape == (2, 256, backbone.embed_dim)
    torch.testing.assert_close(feats, torch.cat(expected, -1))
    assert backbone.featurizer.num_prefix_tokens == 5  # DINOv2: class token + 4 registers
    assert backbone.fused_featurizer.num_prefix_tokens == 0  # SigLIP: none


def test_layer_scale_uses_released_parameter_names(tiny_model):
    keys = tiny_model.state_dict().keys()
    assert "vision_backbone.featurizer.blocks.0.ls1.scale_factor" in keys
    assert not any(k.endswith(".gamma") for k in keys)
    for prefix in ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.", "projector.fc3.",
                   "language_model.model.embed_tokens.", "language_model.lm_head.", "value_head.mlp.4."):
        assert any(k.startswith(prefix) for k in keys), prefix


def test_proprio_becomes_one_token_and_changes_the_action(tiny_config, processor):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(use_proprio=True, proprio_dim=61)).eval()
    inputs = model_inputs(processor, ["stack the blocks"])
    embeds, _ = model.build_inputs(**inputs, proprio=torch.zeros(1, 61))
    assert embeds.shape[1] == inputs["input_ids"].shape[1] + 3 * 256 + 1 + 184
    with torch.no_grad():
        a = model(**inputs, proprio=torch.zeros(1, 61)).action_logits
        b = model(**inputs, proprio=torch.ones(1, 61)).action_logits
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="use_proprio=True"):
        model(**inputs)


def test_stop_token_variant_and_input_errors(tiny_config, processor):
    model = build_model(tiny_config.replace(append_stop_token=True)).eval()
    inputs = model_inputs(processor, ["stack the blocks"])
    with torch.no_grad():
        assert model(**inputs).action_logits.shape == (1, 184, 256)
    bad = dict(inputs, input_ids=inputs["input_ids"].roll(1, dims=1))
    with pytest.raises(ValueError, match="must start with BOS"):
        model(**bad)
    with pytest.raises(ValueError, match="takes 3 images"):
        model(**dict(inputs, pixel_values=inputs["pixel_values"][:, :12]))


def test_predict_action_denormalises_with_norm_stats(tiny_config, processor):
    stats = {"behavior_turn_on_radio": {"action": {"q01": [-1.0] * 23, "q99": [3.0] * 23, "mask": [True] * 23}}}
    model = build_model(tiny_config.replace(norm_stats=stats)).eval()
    inputs = model_inputs(processor, INSTRUCTIONS[:2])
    actions, ids = model.predict_action(**inputs)
    assert actions.shape == (2, 8, 23) and ids.shape == (2, 184)
    assert ids.min() >= 384 and ids.max() < 640  # tiny: vocab 704 - 64 pad region -> action ids 384..639
    with torch.no_grad():
        greedy = model(**inputs).action_logits.argmax(-1)
    assert torch.equal(ids - 384, greedy)
    norm = model.action_tokenizer.decode(ids)
    torch.testing.assert_close(actions.flatten(1), (0.5 * (norm + 1) * (4 + 1e-8) - 1).float())
    with pytest.raises(KeyError, match="behavior_turn_on_radio"):
        model.predict_action(**inputs, unnorm_key="libero_spatial_no_noops")


def test_presets_tiny_builds_fast_small_and_7_5b_counts():
    start = time.perf_counter()
    tiny = build_model(OpenVLAOFTConfig.from_preset("tiny"))
    assert time.perf_counter() - start < 2.0
    assert 1e5 < tiny.num_parameters() < 5e6
    with torch.device("meta"):
        small = OpenVLAOFTForActionPrediction(OpenVLAOFTConfig.from_preset("small"))
        full = OpenVLAOFTForActionPrediction(OpenVLAOFTConfig.from_preset("7.5b"))
    assert 50e6 < small.num_parameters() < 150e6
    n = full.num_parameters()
    assert 7.4e9 < n < 7.6e9, n
    # the parts of OpenVLA-7B (reference §1): ViT-L/14 DINOv2, SO400M SigLIP, 3-layer projector, Llama-2-7B
    assert full.vision_backbone.embed_dim == 2176
    assert [tuple(full.projector.__getattr__(f).weight.shape) for f in ("fc1", "fc2", "fc3")] == [
        (8704, 2176), (4096, 8704), (4096, 4096)]
    assert tuple(full.language_model.model.embed_tokens.weight.shape) == (32064, 4096)
    assert full.action_tokenizer.token_begin == 31744


def test_small_p28_preset_has_64_tokens_per_image_and_round_trips(tmp_path, processor):
    config = OpenVLAOFTConfig.from_preset("small-p28")
    assert [kw["patch_size"] for kw in config.timm_model_kwargs] == [28, 28]
    assert OpenVLAOFTConfig.from_dict(config.to_dict()) == config
    # the same layers as "small", so the same parameters except the larger patch embeddings and fewer positions
    with torch.device("meta"):
        small = OpenVLAOFTForActionPrediction(OpenVLAOFTConfig.from_preset("small"))
        coarse = OpenVLAOFTForActionPrediction(config)
    assert small.num_image_tokens == 3 * 256 and coarse.num_image_tokens == 3 * 64
    assert {k for k, _ in small.named_parameters()} == {k for k, _ in coarse.named_parameters()}
    # a tiny model with 28-px patches saves and loads as such
    tiny = build_model(OpenVLAOFTConfig.from_preset("tiny").replace(
        timm_model_kwargs=[{**kw, "patch_size": 28} for kw in OpenVLAOFTConfig.from_preset("tiny").timm_model_kwargs]))
    tiny.eval()
    tiny.save_pretrained(tmp_path)
    again = OpenVLAOFTForActionPrediction.from_pretrained(tmp_path).eval()
    assert again.num_image_tokens == 3 * 64
    inputs = model_inputs(processor, INSTRUCTIONS[:2])
    with torch.no_grad():
        torch.testing.assert_close(again(**inputs).action_logits, tiny(**inputs).action_logits)


def test_config_round_trip_presets_and_overrides(tiny_config):
    again = OpenVLAOFTConfig.from_dict(tiny_config.to_dict())
    assert again == tiny_config
    cfg = OpenVLAOFTConfig.from_preset("tiny", num_action_chunks=4, text_config={"num_hidden_layers": 1})
    assert cfg.num_action_tokens == 92 and cfg.text_config["num_hidden_layers"] == 1
    assert cfg.text_config["hidden_size"] == tiny_config.text_config["hidden_size"]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        OpenVLAOFTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="model_type 'llama'"):
        OpenVLAOFTConfig.from_dict({"model_type": "llama"})
    # a released config with only partial text_config fills transformers' Llama defaults
    partial = OpenVLAOFTConfig.from_dict({"model_type": "openvla", "text_config": {"vocab_size": 32064},
                                          "some_future_field": 1})
    assert partial.hidden_size == 4096 and partial.extra == {"some_future_field": 1}
    assert partial.to_dict()["some_future_field"] == 1


def test_bfloat16_keeps_rope_frequencies_in_float32(tiny_config):
    model = build_model(tiny_config, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, processor):
    torch.manual_seed(0)
    plain = build_model(tiny_config)
    ckpt = build_model(tiny_config)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.enable_gradient_checkpointing()
    inputs = model_inputs(processor, INSTRUCTIONS[:2])
    for m in (plain, ckpt):
        m.train()
        out = m(**inputs)
        (out.action_logits.logsumexp(-1).mean() + out.values.sum()).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_causal_attention_option(tiny_config, processor):
    torch.manual_seed(0)
    model = build_model(tiny_config.replace(causal_attention=True)).eval()
    texts = ["go", "open the top drawer of the kitchen cabinet"]
    batch = model_inputs(processor, texts, seed=5)
    with torch.no_grad():
        out = model(**batch).action_logits
        for i, text in enumerate(texts):  # left padding still changes nothing
            single = {"pixel_values": batch["pixel_values"][i:i + 1],
                      **dict(zip(("input_ids", "attention_mask"), processor.tokenize([text])))}
            torch.testing.assert_close(out[i:i + 1], model(**single).action_logits, rtol=1e-4, atol=1e-5)
        # nothing attends to later positions: a STOP token after the placeholders changes no logit ...
        stop = build_model(tiny_config.replace(causal_attention=True, append_stop_token=True)).eval()
        stop.load_state_dict(model.state_dict())
        torch.testing.assert_close(stop(**batch).action_logits, out, rtol=1e-4, atol=1e-5)
        # ... whereas with OFT's bidirectional attention everything sees everything
        bidir = build_model(tiny_config).eval()
        bidir.load_state_dict(model.state_dict())
        assert (bidir(**batch).action_logits - out).abs().max() > 1e-4


def test_decoder_matches_transformers_llama_with_a_padding_mask(tiny_model, processor):
    # the layer loop calls the Llama layers' submodules itself; transformers' own forward with the
    # equivalent 4-D mask must give the same hidden states
    texts = ["go", "open the top drawer of the kitchen cabinet"]
    inputs = model_inputs(processor, texts, seed=6)
    with torch.no_grad():
        ours = tiny_model(**inputs, output_hidden_states=True).last_hidden_state
        embeds, mask = tiny_model.build_inputs(**inputs)
        bias = torch.zeros(mask.shape[0], 1, 1, mask.shape[1]).masked_fill(mask[:, None, None, :] == 0, -1e30)
        theirs = tiny_model.language_model.model(inputs_embeds=embeds, attention_mask=bias,
                                                 position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-4, atol=1e-5)


def test_vision_features_match_timm_forward_intermediates(tiny_model):
    backbone = tiny_model.vision_backbone
    x = torch.randn(1, 6, 224, 224)
    with torch.no_grad():
        feats = backbone(x)
        timm_feats = [vit.forward_intermediates(x[:, 3 * i:3 * i + 3], indices=[len(vit.blocks) - 2], norm=False,
                                                stop_early=True, output_fmt="NLC", intermediates_only=True)[0]
                      for i, vit in enumerate(backbone.towers)]
    torch.testing.assert_close(feats, torch.cat(timm_feats, -1))
    assert all(m.fused_attn for m in backbone.modules() if hasattr(m, "fused_attn"))  # SDPA in every ViT


def test_batched_log_probs_equal_unbatched(tiny_model, processor):
    # padding (left, after BOS) and batch composition must not change any sample's log-probs
    from vla_policies import ActionTokenDistribution

    texts = ["go", "open the top drawer of the kitchen cabinet and put the spoon inside", "stack the blocks", "go"]
    batch = model_inputs(processor, texts, seed=7)
    with torch.no_grad():
        dist = ActionTokenDistribution(tiny_model(**batch).action_logits, temperature=1.0, top_k=50)
        bins = dist.sample(torch.Generator().manual_seed(0))
        batched = dist.log_prob(bins)
        for idx in ([0], [1], [2, 3], [3, 1]):
            sub = {"pixel_values": batch["pixel_values"][idx],
                   **dict(zip(("input_ids", "attention_mask"), processor.tokenize([texts[i] for i in idx])))}
            alone = ActionTokenDistribution(tiny_model(**sub).action_logits, temperature=1.0, top_k=50)
            torch.testing.assert_close(alone.log_prob(bins[idx]), batched[idx], rtol=0, atol=1e-5)
            torch.testing.assert_close(alone.log_prob(bins[idx]).sum(-1), batched[idx].sum(-1), rtol=0, atol=1e-5)


def test_model_without_value_head_returns_no_values(tiny_config, processor):
    model = build_model(tiny_config.replace(add_value_head=False)).eval()
    assert model.value_head is None
    with torch.no_grad():
        out = model(**model_inputs(processor, INSTRUCTIONS[:2]))
    assert out.values is None and out.action_logits.shape == (2, 184, 256)
    model.add_lora(rank=2)  # nothing to unfreeze besides the adapters
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
