"""Checkpoints: save/load round trip, the released OpenVLA layout, and the errors users meet."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from vla_helpers import INSTRUCTIONS, model_inputs

from vla_policies import OpenVLAOFTForActionPrediction, OpenVLAOFTProcessor, build_model

NORM_STATS = {
    "behavior_turn_on_radio": {
        "action": {"q01": [-0.5] * 23, "q99": [0.5] * 23, "min": [-1.0] * 23, "max": [1.0] * 23,
                   "mean": [0.0] * 23, "std": [0.3] * 23, "mask": [True] * 23},
        "num_transitions": 1000, "num_trajectories": 10,
    },
    "behavior_picking_up_trash": {"action": {"q01": [-1.0] * 23, "q99": [1.0] * 23, "mask": [True] * 23}},
}


def _outputs(model, processor, instructions=INSTRUCTIONS[:2], seed=0):
    with torch.no_grad():
        return model(**model_inputs(processor, instructions, seed=seed))


def test_save_load_round_trip_gives_identical_outputs(tiny_model, processor, tmp_path):
    tiny_model.config.norm_stats = NORM_STATS
    tiny_model.save_pretrained(tmp_path / "ckpt", processor=processor)
    files = set(os.listdir(tmp_path / "ckpt"))
    assert {"config.json", "model.safetensors", "dataset_statistics.json", "tokenizer.json",
            "preprocessor_config.json"} <= files
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == "openvla"
    loaded = OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "ckpt")
    proc = OpenVLAOFTProcessor.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.norm_stats == NORM_STATS
    for text in INSTRUCTIONS:
        assert proc.encode_instruction(text) == processor.encode_instruction(text)
    a, b = _outputs(tiny_model, processor), _outputs(loaded, proc)
    assert torch.equal(a.action_logits, b.action_logits) and torch.equal(a.values, b.values)
    for (k, v), (k2, v2) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_save_is_atomic_and_replaces_an_existing_checkpoint(tiny_model, processor, tmp_path):
    target = tmp_path / "ckpt"
    tiny_model.save_pretrained(target, processor=processor)
    before = (target / "model.safetensors").read_bytes()

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with torch.no_grad():
        tiny_model.projector.fc3.bias.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save_pretrained(target, processor=Broken())
    assert (target / "model.safetensors").read_bytes() == before  # the old checkpoint is untouched
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary directory left behind
    tiny_model.save_pretrained(target, processor=processor, max_shard_size="200KB")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert not (target / "model.safetensors").exists() and (target / "model.safetensors.index.json").exists()
    loaded = OpenVLAOFTForActionPrediction.from_pretrained(target)
    assert torch.equal(loaded.projector.fc3.bias, tiny_model.projector.fc3.bias)


# ------------------------------------------------------------------------------------------ released layout


def make_llama_style_tokenizer(path) -> None:
    """A SentencePiece/Llama-like BPE tokenizer trained here with the `tokenizers` library (no hub)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    corpus = [f"In: What action should the robot take to {t}?\nOut: " for t in INSTRUCTIONS] * 20
    alphabet = [chr(c) for c in range(32, 127)] + ["\u2581"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                        initial_alphabet=alphabet, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    pad_id = tok.get_vocab_size()
    tok.add_special_tokens(["<PAD>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>", "padding_side": "right",
        "model_max_length": 2048, "legacy": False}))
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}))
    (path / "added_tokens.json").write_text(json.dumps({"<PAD>": pad_id}))


def write_released_checkpoint(model, path, *, n_shards: int = 3, layer_scale_name: str = "scale_factor",
                              key_prefix: str = "", drop: tuple[str, ...] = (), with_tokenizer: bool = True) -> None:
    """Write `model` the way released OpenVLA(-OFT) checkpoints are laid out, without our save code."""
    path.mkdir(parents=True)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
             if not k.startswith(drop)}
    if layer_scale_name != "scale_factor":
        state = {k.replace(".scale_factor", f".{layer_scale_name}"): v for k, v in state.items()}
    state = {key_prefix + k: v for k, v in state.items()}
    keys = list(state)
    per = -(-len(keys) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(v.numel() * 2 for v in state.values())}, "weight_map": weight_map}))
    cfg = model.config
    text_config = {"model_type": "llama", "torch_dtype": "bfloat16", "pad_token_id": cfg.pad_token_id,
                   **{k: cfg.text_config[k] for k in ("vocab_size", "hidden_size", "intermediate_size",
                                                       "num_hidden_layers", "num_attention_heads")}}
    (path / "config.json").write_text(json.dumps({
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig",
                     "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction"},
        "arch_specifier": "no-align+fused-gelu-mlp", "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive", "image_sizes": [224, 224], "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048, "model_type": "openvla", "n_action_bins": 256,
        "norm_stats": {"libero_spatial_no_noops": NORM_STATS["behavior_picking_up_trash"]},
        "output_projector_states": False, "pad_to_multiple_of": 64, "pad_token_id": cfg.pad_token_id,
        "text_config": text_config, "timm_model_ids": cfg.timm_model_ids, "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        # not in OpenVLA-7B's config: the small towers and value head of the tiny test model
        "timm_model_kwargs": cfg.timm_model_kwargs, "value_head_hidden_sizes": cfg.value_head_hidden_sizes,
    }))
    (path / "dataset_statistics.json").write_text(json.dumps(NORM_STATS))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2,
                                                             "pad_token_id": cfg.pad_token_id}))
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "PrismaticProcessor"}))
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, 224, 224], [3, 224, 224]], "interpolations": ["bicubic", "bicubic"],
        "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
        "use_fused_vision_backbone": True, "processor_class": "PrismaticProcessor"}))
    if with_tokenizer:
        make_llama_style_tokenizer(path)


def _bf16_copy(model):
    ref = build_model(model.config)
    ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    return ref.eval()


def test_loads_a_checkpoint_in_the_released_layout(tiny_model, tmp_path):
    path = tmp_path / "openvla-oft-behavior"
    write_released_checkpoint(tiny_model, path)
    model = OpenVLAOFTForActionPrediction.from_pretrained(path)
    proc = OpenVLAOFTProcessor.from_pretrained(path)
    # dataset_statistics.json wins over config.json's norm_stats (as in OFT's get_vla)
    assert sorted(model.config.norm_stats) == sorted(NORM_STATS)
    assert model.config.extra["auto_map"]["AutoConfig"] == "configuration_prismatic.OpenVLAConfig"
    # the checkpoint's own tokenizer, BOS first and the "▁" token last
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    prompt = "In: What action should the robot take to stack the blocks?\nOut: "
    ids = proc.encode_instruction("Stack the blocks")
    expected = tok.encode(prompt).ids
    assert ids[:len(expected)] == expected and ids[0] == 1 and ids[-1] == tok.token_to_id("\u2581")
    ref = _bf16_copy(tiny_model)
    a, b = _outputs(ref, proc), _outputs(model, proc)
    torch.testing.assert_close(a.action_logits, b.action_logits, rtol=0, atol=0)
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    actions, _ = model.predict_action(**model_inputs(proc, ["stack the blocks"]), unnorm_key="behavior_turn_on_radio")
    assert actions.abs().max() <= 0.5 + 1e-6  # q01/q99 = -0.5/0.5
    # saving it again writes the same layout, which loads to the same outputs
    model.save_pretrained(tmp_path / "again", processor=proc, torch_dtype=torch.bfloat16)
    again = OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "again", torch_dtype="auto")
    assert again.dtype == torch.bfloat16  # the stored dtype, as written into config.json
    assert torch.equal(_outputs(again.float(), proc).action_logits, b.action_logits)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["auto_map"] == model.config.extra["auto_map"]
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (path / "tokenizer.json").read_bytes()


def test_accepts_timm_gamma_names_ddp_prefixes_and_missing_value_head(tiny_model, tmp_path, caplog):
    path = tmp_path / "ckpt"
    write_released_checkpoint(tiny_model, path, layer_scale_name="gamma", key_prefix="module.", drop=("value_head.",))
    assert any(".ls1.gamma" in k for k in load_file(str(path / "model-00001-of-00003.safetensors")))
    with caplog.at_level(logging.INFO):
        model = OpenVLAOFTForActionPrediction.from_pretrained(path)
    assert "value_head" in caplog.text
    ref = _bf16_copy(tiny_model)
    scale = model.vision_backbone.featurizer.blocks[1].ls2.scale_factor
    assert torch.equal(scale, ref.vision_backbone.featurizer.blocks[1].ls2.scale_factor)
    assert model.value_head is not None and not model.value_head.mlp[0].weight.is_meta
    assert torch.isfinite(_outputs(model, OpenVLAOFTProcessor.from_pretrained(path)).values).all()


def test_loads_oft_proprio_projector_component_file(tiny_config, tmp_path):
    cfg = tiny_config.replace(use_proprio=True)
    model = build_model(cfg)
    path = tmp_path / "ckpt"
    write_released_checkpoint(model, path, drop=("proprio_projector.",))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "use_proprio": True}))
    proj = {f"module.{k}": v for k, v in model.proprio_projector.state_dict().items()}  # saved from DDP
    torch.save(proj, path / "proprio_projector--150000_checkpoint.pt")
    loaded = OpenVLAOFTForActionPrediction.from_pretrained(path)
    assert torch.equal(loaded.proprio_projector.fc2.weight, model.proprio_projector.fc2.weight)


def test_clear_errors(tiny_model, processor, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "empty")

    path = tmp_path / "ckpt"
    write_released_checkpoint(tiny_model, path, with_tokenizer=False)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        OpenVLAOFTProcessor.from_pretrained(path)
    # a missing shard
    os.rename(path / "model-00002-of-00003.safetensors", tmp_path / "shard2")
    with pytest.raises(FileNotFoundError, match=r"missing: \['model-00002-of-00003.safetensors'\]"):
        OpenVLAOFTForActionPrediction.from_pretrained(path)
    os.rename(tmp_path / "shard2", path / "model-00002-of-00003.safetensors")
    # no weights at all
    os.rename(path / "model.safetensors.index.json", tmp_path / "index")
    for f in path.glob("*.safetensors"):
        os.rename(f, tmp_path / f.name)
    with pytest.raises(FileNotFoundError, match="no weights in"):
        OpenVLAOFTForActionPrediction.from_pretrained(path)
    os.rename(tmp_path / "index", path / "model.safetensors.index.json")
    for f in tmp_path.glob("*.safetensors"):
        os.rename(f, path / f.name)

    # a shape mismatch names the key and both shapes
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shard = path / index["weight_map"]["projector.fc3.bias"]
    tensors = load_file(str(shard))
    hidden = tiny_model.config.hidden_size
    tensors["projector.fc3.bias"] = torch.zeros(hidden + 1, dtype=torch.bfloat16)
    save_file(tensors, str(shard))
    with pytest.raises(ValueError) as e:
        OpenVLAOFTForActionPrediction.from_pretrained(path)
    assert "projector.fc3.bias" in str(e.value)
    assert f"checkpoint has ({hidden + 1},), the model built from config.json expects ({hidden},)" in str(e.value)

    # weights that belong nowhere, and weights that are missing
    tensors["projector.fc3.bias"] = torch.zeros(hidden, dtype=torch.bfloat16)
    tensors["projector.fc9.weight"] = torch.zeros(2, dtype=torch.bfloat16)
    save_file(tensors, str(shard))
    with pytest.raises(ValueError, match="projector.fc9.weight"):
        OpenVLAOFTForActionPrediction.from_pretrained(path)
    assert OpenVLAOFTForActionPrediction.from_pretrained(path, strict=False) is not None
    del tensors["projector.fc3.bias"]
    save_file(tensors, str(shard))
    with pytest.raises(ValueError, match=r"missing from .*projector.fc3.bias"):
        OpenVLAOFTForActionPrediction.from_pretrained(path, strict=False)

    # an unknown unnorm_key lists the available ones
    tiny_model.config.norm_stats = NORM_STATS
    with pytest.raises(KeyError) as e:
        tiny_model.get_action_normalizer("libero_10_no_noops")
    assert "'behavior_picking_up_trash', 'behavior_turn_on_radio'" in str(e.value)

    # config.json of another model type
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        OpenVLAOFTForActionPrediction.from_pretrained(tmp_path / "llama")
