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

A LoRA adapter is saved on its own in peft's format (`save_lora_adapter`): `adapter_config.json`
(a peft `LoraConfig`, with `base_model_name_or_path` and `modules_to_save` naming the value head and
proprio projector) and `adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight`,
..., `base_model.model.value_head.*`). `load_model(base, adapter_path=dir)` loads base + adapter;
`load_model(dir)` on an adapter directory loads the base its config names.

Loading builds the model on the meta device and assigns the checkpoint's tensors, so a 7.5B model is
never initialised twice. Timm-native LayerScale names (`.gamma`) and DDP prefixes (`module.`) are
accepted. Saving writes to a temporary directory beside the target and renames it into place.
"""

from __future__ import annotations

import copy
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
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what peft's PeftModel puts before every saved key
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
               adapter_path: str | os.PathLike | None = None,
               **config_overrides: Any) -> OpenVLAOFTForActionPrediction:
    """Load a checkpoint directory as it is released.

    Args:
        path: the directory.
        torch_dtype: dtype of the returned model: a dtype, its name, "auto" (the checkpoint's), or None (float32).
        device: where to put the model (default CPU).
        strict: refuse weights the model has no place for (after key mapping).
        adapter_path: a LoRA adapter directory (`save_lora_adapter`) to add on top of the base weights.
            If `path` itself is an adapter directory, its `base_model_name_or_path` is the base.
        config_overrides: config fields to change, e.g. `action_dim=23, num_action_chunks=8,
            num_images_in_input=3` for a checkpoint whose config.json does not say them.

    Raises:
        FileNotFoundError: no such directory, no config.json, no weights, a missing shard.
        ValueError: a weight whose shape differs from the model's (naming the key and both shapes),
            weights that belong to no part of the model, or required weights that are missing.
    """
    path = _checkpoint_dir(path)
    if adapter_path is None and _is_adapter_dir(path):
        adapter_path, path = path, _adapter_base_path(path)
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
    if adapter_path is not None:
        load_lora_adapter(model, adapter_path)
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


# ---------------------------------------------------------------------------------------------------- LoRA adapters

_ADAPTER_NAME = re.compile(r"\.(lora_[A-Za-z_]+)\.default(?=\.|$)")
_ADAPTER_HEADS = ("value_head", "proprio_projector")  # trained with the adapters, saved with them


def _peft_key(key: str) -> str:
    """This model's adapter key -> peft's saved key (adapter name dropped, PeftModel prefix added)."""
    return PEFT_PREFIX + _ADAPTER_NAME.sub(r".\1", key)


def _is_adapter_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ADAPTER_CONFIG_NAME)) and not os.path.isfile(
        os.path.join(path, CONFIG_NAME))


def _adapter_base_path(path: str) -> str:
    with open(os.path.join(path, ADAPTER_CONFIG_NAME), encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path!r} is a LoRA adapter without base_model_name_or_path in {ADAPTER_CONFIG_NAME}; "
                         "load its base with load_model(base_path, adapter_path=...)")
    if not os.path.isabs(base):  # written relative to the adapter directory
        base = os.path.normpath(os.path.join(path, base))
    return _checkpoint_dir(base)


def save_lora_adapter(model: OpenVLAOFTForActionPrediction, path: str | os.PathLike,
                      base_model_path: str | os.PathLike | None = None) -> None:
    """Write only the LoRA adapters of `model` (plus its value head and proprio projector) in peft's format.

    Args:
        model: a model with adapters (`add_lora`).
        path: target directory (replaced atomically if it exists): `adapter_config.json` and
            `adapter_model.safetensors`, a few MB to a few hundred MB instead of 15 GB.
        base_model_path: the base checkpoint, recorded as `base_model_name_or_path` (relative to
            `path` when both are local), so that `load_model(path)` finds it.
    """
    from safetensors.torch import save_file

    if model.lora_config is None or not model.has_lora:
        raise ValueError("the model has no LoRA adapters to save; add_lora() first, or save_pretrained() the model")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if ".lora_" in key:
            state[_peft_key(key)] = tensor
        elif key.startswith(tuple(f"{h}." for h in _ADAPTER_HEADS)):
            state[PEFT_PREFIX + key] = tensor
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    config = copy.deepcopy(model.lora_config)
    config.modules_to_save = [h for h in _ADAPTER_HEADS if getattr(model, h) is not None] or None
    target = os.path.abspath(os.fspath(path))
    if base_model_path is not None:
        base = os.path.abspath(os.fspath(base_model_path))
        config.base_model_name_or_path = os.path.relpath(base, target)
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        config.save_pretrained(tmp)
        save_file(state, os.path.join(tmp, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_lora_adapter(model: OpenVLAOFTForActionPrediction, path: str | os.PathLike) -> None:
    """Add the adapters of a peft-format directory to `model` (its base) and load their weights.

    Raises:
        FileNotFoundError: no adapter_config.json or adapter_model.safetensors.
        ValueError: an adapter weight that has no place in the model, one whose shape differs
            (naming the key and both shapes), or adapter weights missing from the file.
    """
    from peft import LoraConfig
    from safetensors.torch import load_file

    path = _checkpoint_dir(path)
    files = [os.path.join(path, n) for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME)]
    missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{path!r} is not a LoRA adapter directory: {missing} missing (found "
                                f"{sorted(os.listdir(path))}); write one with save_lora_adapter()")
    with open(files[0], encoding="utf-8") as f:
        raw = json.load(f)
    if raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{files[0]} describes a {raw.get('peft_type')} adapter; only LoRA is supported")
    config = LoraConfig.from_pretrained(path)
    config.modules_to_save = None  # the heads are plain modules here, loaded below
    config.inference_mode = False
    if model.has_lora:
        raise RuntimeError("the model already has LoRA adapters; load the adapter into a base model")
    model.add_lora(lora_config=config)
    expected = model.state_dict()
    by_peft_key = {_peft_key(k): k for k in expected if ".lora_" in k}
    loaded: dict[str, torch.Tensor] = {}
    unexpected = []
    for raw_key, tensor in load_file(files[1]).items():
        peft_key = raw_key if raw_key.startswith(PEFT_PREFIX) else PEFT_PREFIX + raw_key
        key = by_peft_key.get(peft_key, peft_key[len(PEFT_PREFIX):])
        if key not in expected or not (".lora_" in key or key.startswith(_ADAPTER_HEADS)):
            unexpected.append(raw_key)
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"shape mismatch for {raw_key!r} in {ADAPTER_WEIGHTS_NAME}: the adapter has "
                             f"{tuple(tensor.shape)}, the model with this adapter_config expects "
                             f"{tuple(expected[key].shape)}; the adapter was trained on another base model")
        loaded[key] = tensor
    if unexpected:
        raise ValueError(f"{len(unexpected)} adapter weight(s) in {path!r} have no place in this model, e.g. "
                         f"{unexpected[:5]}; the adapter belongs to another base model or target_modules")
    absent = [k for k in by_peft_key.values() if k not in loaded]
    if absent:
        raise ValueError(f"{len(absent)} LoRA weight(s) of the model are missing from {path!r}, e.g. {absent[:5]}")
    model.load_state_dict(loaded, strict=False)


__all__ = [
    "CONFIG_NAME",
    "DATASET_STATISTICS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "canonical_key",
    "load_config",
    "load_lora_adapter",
    "load_model",
    "load_state_dict",
    "read_norm_stats",
    "save_lora_adapter",
    "save_model",
    "weight_files",
    "write_weights",
]
