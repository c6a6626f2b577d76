"""Reading and writing OpenVLA / OpenVLA-OFT / RLinf checkpoint directories in the released layout.

A directory holds (reference §3):

- `config.json` (`model_type: openvla`), optionally `dataset_statistics.json` (norm_stats; it wins
  over config.json's, as in OFT's `get_vla`), `generation_config.json`;
- weights: `model.safetensors`, or shards `model-0000i-of-0000n.safetensors` listed in
  `model.safetensors.index.json` (`pytorch_model.bin` is read too); keys `vision_backbone.featurizer.*`,
  `vision_backbone.fused_featurizer.*`, `projector.*`, `language_model.*`, and for RL checkpoints
  `value_head.*` (and `proprio_projector.*`);
- tokenizer files (`tokenizer.json`, `tokenizer.model`, `tokenizer_config.json`, ...) and
  `preprocessor_config.json` / `processor_config.json`;
- OFT component files saved beside the merged model: `proprio_projector--{step}_checkpoint.pt` is
  loaded when the safetensors lack the projector; `action_head--*` (continuous L1/diffusion heads),
  `vision_backbone--*` (FiLM) and `lora_adapter/` are reported and not used.

Loading builds the model on the meta device and assigns the checkpoint's tensors, so a 7.5B model is
never initialised twice. Timm-native LayerScale names (`.gamma`) and DDP prefixes (`module.`) are
accepted. Saving writes to a temporary directory beside the target and renames it into place.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .configuration_openvla_oft import CONFIG_NAME, OpenVLAOFTConfig
from .modeling_openvla_oft import (
    OpenVLAOFTForActionPrediction,
    ProprioProjector,
    ValueHead,
    rebuild_computed_buffers,
)

logger = logging.getLogger(__name__)

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
DATASET_STATISTICS_NAME = "dataset_statistics.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# Heads that RL adds on top of a supervised checkpoint: initialised fresh when a checkpoint lacks them.
OPTIONAL_PREFIXES = ("value_head.", "proprio_projector.")


# ---------------------------------------------------------------------------------------------------- reading


def _checkpoint_dir(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "is a file, not a directory" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"checkpoint directory {path!r} {what}; pass the folder that holds config.json "
                                "and the model*.safetensors files")
    return path


def read_norm_stats(path: str | os.PathLike) -> dict[str, Any] | None:
    """`dataset_statistics.json` of a checkpoint directory, or None if there is none."""
    file = os.path.join(os.fspath(path), DATASET_STATISTICS_NAME)
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def load_config(path: str | os.PathLike, **overrides: Any) -> OpenVLAOFTConfig:
    """The checkpoint's config, with `dataset_statistics.json` as its norm_stats when present."""
    path = _checkpoint_dir(path)
    if "norm_stats" not in overrides:
        stats = read_norm_stats(path)
        if stats is not None:
            overrides["norm_stats"] = stats
    return OpenVLAOFTConfig.from_pretrained(path, **overrides)


def weight_files(path: str | os.PathLike) -> list[str]:
    """The weight files of a checkpoint directory, in shard order; clear errors when any is missing."""
    path = os.fspath(path)
    index_file = os.path.join(path, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(index_file):
        with open(index_file, encoding="utf-8") as f:
            index = json.load(f)
        if "weight_map" not in index:
            raise ValueError(f"{index_file} has no 'weight_map'; it is not a safetensors shard index")
        shards = sorted(set(index["weight_map"].values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
        if missing:
            raise FileNotFoundError(f"{SAFE_WEIGHTS_INDEX_NAME} in {path!r} lists shard(s) that are missing: "
                                    f"{missing}; the download or copy is incomplete")
        return [os.path.join(path, s) for s in shards]
    for name in (SAFE_WEIGHTS_NAME, TORCH_WEIGHTS_NAME):
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)]
    loose = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if loose:
        raise FileNotFoundError(f"{path!r} has safetensors shards {[os.path.basename(f) for f in loose]} but no "
                                f"{SAFE_WEIGHTS_INDEX_NAME} saying which keys they hold")
    raise FileNotFoundError(f"no weights in {path!r}: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME} with "
                            f"its shards, or {TORCH_WEIGHTS_NAME}; found {sorted(os.listdir(path))}")


def _read_tensors(file: str) -> Iterator[tuple[str, torch.Tensor]]:
    if file.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(file, framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
        yield from state.items()


_LAYER_SCALE_GAMMA = re.compile(r"\.(ls[12])\.gamma$")


def canonical_key(key: str) -> str:
    """Checkpoint key -> this model's key: strips DDP's `module.`, maps timm's LayerScale `gamma`."""
    if key.startswith("module."):
        key = key[len("module."):]
    return _LAYER_SCALE_GAMMA.sub(r".\1.scale_factor", key)


def _component_file(path: str, component: str) -> str | None:
    files = sorted(glob.glob(os.path.join(path, f"{component}--*_checkpoint.pt")))
    return files[-1] if files else None


def _shape_error(key: str, file: str, got: tuple[int, ...], expected: tuple[int, ...], config: OpenVLAOFTConfig) -> str:
    return (f"shape mismatch for {key!r} in {os.path.basename(file)}: the checkpoint has {got}, the model built from "
            f"config.json expects {expected}. The config (e.g. text_config, timm_model_ids/timm_model_kwargs, "
            f"action_dim={config.action_dim}, proprio_dim={config.proprio_dim}) does not describe these weights")


def load_state_dict(path: str, model: nn.Module, config: OpenVLAOFTConfig, strict: bool = True
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Read and check every weight of the checkpoint against `model`'s expected keys and shapes.

    Returns the tensors under this model's key names and the optional heads that are missing.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    loaded: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for file in weight_files(path):
        for raw_key, tensor in _read_tensors(file):
            key = canonical_key(raw_key)
            if key not in expected:
                unexpected.append(raw_key)
                continue
            if tuple(tensor.shape) != expected[key]:
                raise ValueError(_shape_error(raw_key, file, tuple(tensor.shape), expected[key], config))
            loaded[key] = tensor
    for component, prefix in (("proprio_projector", "proprio_projector."), ("value_head", "value_head.")):
        wanted = [k for k in expected if k.startswith(prefix)]
        if not wanted or any(k in loaded for k in wanted):
            continue
        file = _component_file(path, component)
        if file is None:
            continue
        for raw_key, tensor in torch.load(file, map_location="cpu", weights_only=True).items():
            key = prefix + canonical_key(raw_key)
            if key not in expected:
                unexpected.append(f"{os.path.basename(file)}:{raw_key}")
            elif tuple(tensor.shape) != expected[key]:
                raise ValueError(_shape_error(raw_key, file, tuple(tensor.shape), expected[key], config))
            else:
                loaded[key] = tensor
    for component, why in (("action_head", "a continuous (L1/diffusion) action head; this model decodes discrete "
                                           "action tokens with the LM head"),
                            ("vision_backbone", "a FiLM vision backbone, which this model does not implement")):
        file = _component_file(path, component)
        if file is not None:
            logger.warning("%s is %s; it is not loaded", os.path.basename(file), why)
    if os.path.isdir(os.path.join(path, "lora_adapter")):
        logger.info("%s has a lora_adapter/ folder; its safetensors weights are taken as the merged model and the "
                    "adapter is not applied again", path)
    if unexpected:
        msg = (f"{len(unexpected)} weight(s) in {path!r} do not belong to this model, e.g. {unexpected[:8]}; "
               "check that config.json matches the weights (pass strict=False to ignore them)")
        if strict:
            raise ValueError(msg)
        logger.warning(msg)
    missing = [k for k in expected if k not in loaded]
    optional = [k for k in missing if k.startswith(OPTIONAL_PREFIXES)]
    required = [k for k in missing if k not in optional]
    if required:
        raise ValueError(f"{len(required)} weight(s) of the model are missing from {path!r}, e.g. {required[:8]}; "
                         "the checkpoint is incomplete or belongs to another architecture")
    return loaded, optional


def _materialize(model: OpenVLAOFTForActionPrediction) -> None:
    """Replace what is still on the meta device after loading: fresh optional heads, rotary buffers."""
    cfg = model.config
    if model.value_head is not None and model.value_head.mlp[0].weight.is_meta:
        model.value_head = ValueHead(cfg.hidden_size, cfg.value_head_hidden_sizes)
    if model.proprio_projector is not None and model.proprio_projector.fc1.weight.is_meta:
        model.proprio_projector = ProprioProjector(cfg.proprio_dim, cfg.hidden_size)
    rebuild_computed_buffers(model)  # e.g. LlamaRotaryEmbedding: computed, not stored
    still = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still:
        raise RuntimeError(f"internal error: {still[:5]} were neither loaded nor initialised")


def _resolve_dtype(torch_dtype: torch.dtype | str | None, config: OpenVLAOFTConfig) -> torch.dtype:
    if torch_dtype is None:
        return torch.float32
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    name = config.torch_dtype if torch_dtype == "auto" else torch_dtype
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}; use e.g. torch.bfloat16, 'bfloat16', 'float32' "
                         "or 'auto'")
    return dtype


def load_model(path: str | os.PathLike, torch_dtype: torch.dtype | str | None = None,
               device: torch.device | str | None = None, strict: bool = True,
               **config_overrides: Any) -> OpenVLAOFTForActionPrediction:
    """Load a checkpoint directory as it is released.

    Args:
        path: the directory.
        torch_dtype: dtype of the returned model: a dtype, its name, "auto" (the checkpoint's), or None (float32).
        device: where to put the model (default CPU).
        strict: refuse weights the model has no place for (after key mapping).
        config_overrides: config fields to change, e.g. `action_dim=23, num_action_chunks=8,
            num_images_in_input=3` for a checkpoint whose config.json does not say them.

    Raises:
        FileNotFoundError: no such directory, no config.json, no weights, a missing shard.
        ValueError: a weight whose shape differs from the model's (naming the key and both shapes),
            weights that belong to no part of the model, or required weights that are missing.
    """
    path = _checkpoint_dir(path)
    config = load_config(path, **config_overrides)
    with torch.device("meta"):
        model = OpenVLAOFTForActionPrediction(config)
    state, fresh = load_state_dict(path, model, config, strict=strict)
    model.load_state_dict(state, strict=False, assign=True)
    if fresh:
        heads = sorted({k.split(".")[0] for k in fresh})
        logger.info("%s has no %s weights; initialising them", path, " / ".join(heads))
    _materialize(model)
    model.to(device=device or "cpu")
    model.set_dtype(_resolve_dtype(torch_dtype, config))
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------------- writing


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", size.upper())
    if not m:
        raise ValueError(f"cannot read max_shard_size {size!r}; use bytes or e.g. '5GB', '500MB'")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)])


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def write_weights(state: dict[str, torch.Tensor], path: str, max_shard_size: int | str = "5GB") -> list[str]:
    """Write `state` as `model.safetensors` or as shards with an index; returns the file names."""
    from safetensors.torch import save_file

    shards = _shards(state, _parse_size(max_shard_size))
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, SAFE_WEIGHTS_NAME), metadata=meta)
        return [SAFE_WEIGHTS_NAME]
    names, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(path, name), metadata=meta)
        names.append(name)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    with open(os.path.join(path, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    return names + [SAFE_WEIGHTS_INDEX_NAME]


def _replace_dir(tmp: str, target: str) -> None:
    # Rename the finished directory into place; an existing target is moved aside first and removed
    # only once the new one is there, so an interrupted save never leaves a half-written checkpoint.
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model: OpenVLAOFTForActionPrediction, path: str | os.PathLike, processor: Any = None,
               max_shard_size: int | str = "5GB", torch_dtype: torch.dtype | str | None = None) -> None:
    """Write `model` (LoRA merged in) and `processor` as a released-layout checkpoint directory, atomically.

    Args:
        model: the model.
        path: target directory (replaced if it exists).
        processor: an `OpenVLAOFTProcessor` whose tokenizer and image settings are saved with it.
        max_shard_size: largest safetensors file (bytes or e.g. "5GB").
        torch_dtype: store the weights in this dtype (default: the model's).
    """
    target = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        state = model.export_state_dict()
        dtype = _resolve_dtype(torch_dtype, model.config) if torch_dtype is not None else None
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in state.items()}
        # safetensors refuses tensors that share memory (e.g. tied embeddings): give each its own copy
        seen: set[int] = set()
        for k, v in state.items():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen:
                state[k] = v.clone()
            seen.add(ptr)
        weight_dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
        config = model.config.replace(torch_dtype=str(weight_dtype).removeprefix("torch."))
        config.save_pretrained(tmp)
        if config.norm_stats:
            with open(os.path.join(tmp, DATASET_STATISTICS_NAME), "w", encoding="utf-8") as f:
                json.dump(config.norm_stats, f, indent=2)
                f.write("\n")
        llm = model.language_model.config
        with open(os.path.join(tmp, GENERATION_CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump({"bos_token_id": llm.bos_token_id, "eos_token_id": llm.eos_token_id,
                       "pad_token_id": config.pad_token_id}, f, indent=2)
            f.write("\n")
        write_weights(state, tmp, max_shard_size)
        if processor is not None:
            processor.save_pretrained(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "CONFIG_NAME",
    "DATASET_STATISTICS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "canonical_key",
    "load_config",
    "load_model",
    "load_state_dict",
    "read_norm_stats",
    "save_model",
    "weight_files",
    "write_weights",
]
