"""Turning observations into model inputs: the prompt template, tokenisation and image transforms.

- Prompt: `"In: What action should the robot take to {instruction.lower()}?\\nOut: "`, tokenised with
  BOS first; the SentencePiece "empty" token (`"▁"`, id 29871 in Llama-2) ends every prompt, appended
  if the tokenizer did not produce it (reference §2.6, §4.1). Tokenised prompts are cached per
  instruction (instructions rarely change during a rollout).
- Batches: BOS at index 0, then left padding, then the rest of the prompt, so that the action
  positions line up across rows (the model's layout).
- Images ("resize-naive"): resize to each tower's input size (bicubic, antialiased, rounded to
  8-bit values as PIL does), scale to [0, 1], normalise per tower (DINOv2: ImageNet mean/std;
  SigLIP: 0.5/0.5) and stack the towers' copies on channels: [B, n_images * 3 * n_towers, S, S].
  Runs on the images' device (GPU in training), on uint8 or float 0..255 input.

Tokenizers are read from a checkpoint's `tokenizer.json` with the `tokenizers` library (exactly as
saved), or from `tokenizer.model` with the `sentencepiece` library. Models without a tokenizer (random presets)
get `build_fallback_tokenizer`, a Llama-style character-level tokenizer made locally.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F

from .configuration_openvla_oft import OpenVLAOFTConfig

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut: "
EMPTY_TOKEN = "\u2581"  # SentencePiece's word-boundary marker "▁"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
PROCESSOR_CONFIG_NAME = "processor_config.json"


# ---------------------------------------------------------------------------------------------------- tokenizers


def build_fallback_tokenizer(vocab_size: int = 32000, pad_token: str = "<PAD>"):
    """A Llama-2-style tokenizer built locally (no download): character level with byte fallback.

    Ids follow Llama's layout: 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..258 the bytes `<0x00>`..`<0xFF>`, then
    `"▁"` and the printable ASCII characters; the remaining ids up to `vocab_size` (which include the
    action tokens, the last 256) are never produced from text. `<PAD>` gets id `vocab_size`.
    Like Llama's, it prepends "▁" and turns spaces into "▁", so "Out: " ends with the "▁" token.
    """
    from tokenizers import Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in [EMPTY_TOKEN] + [chr(c) for c in range(33, 127)]:
        vocab[ch] = len(vocab)
    if vocab_size < len(vocab) + 256:
        raise ValueError(f"vocab_size {vocab_size} is too small: the fallback tokenizer needs {len(vocab)} text "
                         "tokens plus 256 action tokens")
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused_{i}>"] = i
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(EMPTY_TOKEN), normalizers.Replace(" ", EMPTY_TOKEN)])
    tok.decoder = decoders.Sequence([decoders.Replace(EMPTY_TOKEN, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>", pad_token])
    return tok


class PromptTokenizer:
    """The few tokenizer operations the policy needs, over a `tokenizers.Tokenizer`, a
    `sentencepiece.SentencePieceProcessor` or a transformers tokenizer.

    Args:
        backend: one of those.
        bos_token_id: id forced at index 0 of every prompt.
        source_dir: directory the files came from (copied as they are by `save_pretrained`).
    """

    def __init__(self, backend: Any, bos_token_id: int = 1, source_dir: str | None = None):
        self.backend = backend
        self.bos_token_id = int(bos_token_id)
        self.source_dir = source_dir
        self.empty_token_id = self.token_to_id(EMPTY_TOKEN)

    def token_to_id(self, token: str) -> int | None:
        b = self.backend
        if hasattr(b, "token_to_id"):  # tokenizers.Tokenizer
            return b.token_to_id(token)
        if hasattr(b, "piece_to_id"):  # sentencepiece.SentencePieceProcessor
            tid = b.piece_to_id(token)
            return None if tid == b.unk_id() else int(tid)
        tid = b.convert_tokens_to_ids(token)  # a transformers tokenizer
        return None if tid is None or tid == getattr(b, "unk_token_id", None) else int(tid)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` with BOS first."""
        b = self.backend
        if hasattr(b, "token_to_id"):
            ids = list(b.encode(text).ids)
        elif hasattr(b, "piece_to_id"):
            ids = list(b.encode(text))
        else:
            ids = list(b(text, add_special_tokens=True)["input_ids"])
        if not ids or ids[0] != self.bos_token_id:
            ids.insert(0, self.bos_token_id)
        return ids

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, bos_token_id: int = 1) -> PromptTokenizer:
        """Read `tokenizer.json` (tokenizers library) or else `tokenizer.model` (sentencepiece library)."""
        path = os.fspath(path)
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            from tokenizers import Tokenizer

            return cls(Tokenizer.from_file(os.path.join(path, "tokenizer.json")), bos_token_id, source_dir=path)
        if os.path.isfile(os.path.join(path, "tokenizer.model")):
            try:
                import sentencepiece
            except ImportError as e:
                raise ImportError(f"{path!r} has only tokenizer.model, which needs the sentencepiece package: "
                                  "pip install 'behavior-rl[vla]' (or pip install sentencepiece)") from e
            sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(path, "tokenizer.model"))
            return cls(sp, bos_token_id, source_dir=path)
        raise FileNotFoundError(f"no tokenizer in {path!r}: expected tokenizer.json (or tokenizer.model); found "
                                f"{sorted(os.listdir(path)) if os.path.isdir(path) else 'no such directory'}")

    def save_pretrained(self, path: str | os.PathLike, pad_token: str = "<PAD>", pad_token_id: int | None = None,
                        model_max_length: int = 2048) -> None:
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        if self.source_dir is not None:  # keep the released files byte for byte
            for name in TOKENIZER_FILES:
                src = os.path.join(self.source_dir, name)
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(path, name))
            return
        if hasattr(self.backend, "serialized_model_proto"):  # sentencepiece
            with open(os.path.join(path, "tokenizer.model"), "wb") as f:
                f.write(self.backend.serialized_model_proto())
            return
        if not hasattr(self.backend, "save"):
            self.backend.save_pretrained(path)
            return
        self.backend.save(os.path.join(path, "tokenizer.json"))
        specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": pad_token}
        _write_json(os.path.join(path, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", **specials, "add_bos_token": True, "add_eos_token": False,
            "padding_side": "right", "model_max_length": model_max_length, "clean_up_tokenization_spaces": False,
        })
        _write_json(os.path.join(path, "special_tokens_map.json"), specials)
        pad_id = pad_token_id if pad_token_id is not None else self.token_to_id(pad_token)
        if pad_id is not None:
            _write_json(os.path.join(path, "added_tokens.json"), {pad_token: int(pad_id)})


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------------------------------------------- processor


class OpenVLAOFTProcessor:
    """Prompts and images -> `pixel_values`, `input_ids`, `attention_mask` for `OpenVLAOFTForActionPrediction`.

    Args:
        tokenizer: a `PromptTokenizer`.
        image_sizes: input resolution per vision tower.
        means, stds: normalisation per vision tower (RGB).
        pad_token_id: id written into padding positions (masked, so any valid id works).
        center_crop: crop this fraction of the image *area* around the centre before resizing
            (OFT's evaluation-time crop, 0.9, matching its training augmentation); None = no crop.
        prompt_template: with an `{instruction}` field; the instruction is lower-cased.
        cache_size: how many tokenised instructions to keep.
    """

    def __init__(
        self,
        tokenizer: PromptTokenizer,
        image_sizes: Sequence[int] = (224, 224),
        means: Sequence[Sequence[float]] = ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5)),
        stds: Sequence[Sequence[float]] = ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5)),
        pad_token_id: int = 32000,
        center_crop: float | None = None,
        prompt_template: str = PROMPT_TEMPLATE,
        cache_size: int = 4096,
        image_resize_strategy: str = "resize-naive",
    ):
        if not (len(image_sizes) == len(means) == len(stds)):
            raise ValueError(f"image_sizes, means and stds need one entry per vision tower; got {len(image_sizes)}, "
                             f"{len(means)}, {len(stds)}")
        if image_resize_strategy != "resize-naive":
            raise ValueError(f"image_resize_strategy {image_resize_strategy!r} is not supported; OpenVLA uses "
                             "'resize-naive'")
        if center_crop is not None and not 0 < center_crop <= 1:
            raise ValueError(f"center_crop is a fraction of the image area in (0, 1], got {center_crop}")
        self.tokenizer = tokenizer
        self.image_sizes = [int(s) for s in image_sizes]
        self.means = [tuple(float(v) for v in m) for m in means]
        self.stds = [tuple(float(v) for v in s) for s in stds]
        self.pad_token_id = int(pad_token_id)
        self.center_crop = center_crop
        self.prompt_template = prompt_template
        self.image_resize_strategy = image_resize_strategy
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._cache_size = cache_size

    @property
    def num_towers(self) -> int:
        return len(self.image_sizes)

    @classmethod
    def from_config(cls, config: OpenVLAOFTConfig, tokenizer: PromptTokenizer | None = None,
                    **kwargs: Any) -> OpenVLAOFTProcessor:
        """Image settings from the config's timm towers; `build_fallback_tokenizer` if no tokenizer is given."""
        n = config.num_vision_towers
        means, stds = [], []
        for model_id in config.timm_model_ids[:n]:
            pcfg = timm.models.get_pretrained_cfg(model_id)
            means.append(pcfg.mean if pcfg else (0.5, 0.5, 0.5))
            stds.append(pcfg.std if pcfg else (0.5, 0.5, 0.5))
        if tokenizer is None:
            tokenizer = PromptTokenizer(build_fallback_tokenizer(config.pad_token_id),
                                        bos_token_id=config.text_config.get("bos_token_id", 1))
        return cls(tokenizer, config.image_sizes[:n], means, stds, pad_token_id=config.pad_token_id,
                   image_resize_strategy=config.image_resize_strategy, **kwargs)

    # ------------------------------------------------------------------ text
    def build_prompt(self, instruction: str) -> str:
        return self.prompt_template.format(instruction=instruction.lower())

    def encode_instruction(self, instruction: str) -> list[int]:
        """Token ids of the prompt for `instruction` (BOS first, "▁" last), cached."""
        ids = self._cache.get(instruction)
        if ids is not None:
            self._cache.move_to_end(instruction)
            return ids
        ids = self.tokenizer.encode(self.build_prompt(instruction))
        empty = self.tokenizer.empty_token_id
        if empty is not None and ids[-1] != empty:  # OFT: the prompt must end with "▁" (29871)
            ids.append(empty)
        self._cache[instruction] = ids
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ids

    def tokenize(self, instructions: Sequence[str], device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, Lp] `input_ids` and `attention_mask`: BOS at index 0, left padding after it."""
        if isinstance(instructions, str):
            instructions = [instructions]
        rows = [self.encode_instruction(text) for text in instructions]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            pad = width - len(r)
            ids[i, 0] = r[0]
            ids[i, 1 + pad:] = torch.tensor(r[1:], dtype=torch.long)
            mask[i, 0] = 1
            mask[i, 1 + pad:] = 1
        return ids.to(device), mask.to(device)

    # ------------------------------------------------------------------ images
    def preprocess_images(self, images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[B, N, 3, H, W] (or [B, 3, H, W]) images with values 0..255 -> [B, N * 3 * n_towers, S, S]."""
        x = torch.as_tensor(images)
        if x.ndim == 4:
            x = x[:, None]
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"images must be [B, N, 3, H, W] (channel-first RGB), got shape {tuple(x.shape)}")
        b, n, _, h, w = x.shape
        x = x.reshape(b * n, 3, h, w).float()
        if self.center_crop is not None and self.center_crop < 1:
            side = self.center_crop ** 0.5
            ch, cw = max(1, round(h * side)), max(1, round(w * side))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, top:top + ch, left:left + cw]
        towers = []
        resized: dict[int, torch.Tensor] = {}
        for size, mean, std in zip(self.image_sizes, self.means, self.stds):
            if size not in resized:
                y = x
                if y.shape[-2:] != (size, size):
                    y = F.interpolate(y, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
                    y = y.round().clamp(0, 255)  # what an 8-bit PIL resize gives
                resized[size] = y / 255.0
            y = resized[size]
            m = torch.tensor(mean, device=y.device).view(1, 3, 1, 1)
            s = torch.tensor(std, device=y.device).view(1, 3, 1, 1)
            towers.append((y - m) / s)
        if len({t.shape[-1] for t in towers}) != 1:
            raise ValueError(f"vision towers with different input sizes {self.image_sizes} cannot be channel-stacked")
        out = torch.stack(towers, dim=1)  # [B*N, T, 3, S, S]
        return out.reshape(b, n * self.num_towers * 3, out.shape[-2], out.shape[-1]).to(dtype)

    def __call__(self, instructions: Sequence[str], images: torch.Tensor, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        images = torch.as_tensor(images)
        if device is not None:
            images = images.to(device)
        input_ids, attention_mask = self.tokenize(instructions, device=images.device)
        return {"pixel_values": self.preprocess_images(images, dtype), "input_ids": input_ids,
                "attention_mask": attention_mask}

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """`preprocessor_config.json` in PrismaticImageProcessor's field names, plus this project's `center_crop`."""
        return {
            "image_processor_type": "PrismaticImageProcessor",
            "processor_class": "PrismaticProcessor",
            "use_fused_vision_backbone": self.num_towers > 1,
            "image_resize_strategy": self.image_resize_strategy,
            "input_sizes": [[3, s, s] for s in self.image_sizes],
            "interpolations": ["bicubic"] * self.num_towers,
            "means": [list(m) for m in self.means],
            "stds": [list(s) for s in self.stds],
            "tvf_resize_params": [{"size": s, "interpolation": 3, "max_size": None, "antialias": True}
                                  for s in self.image_sizes],
            "tvf_crop_params": [{"output_size": [s, s]} for s in self.image_sizes],
            "tvf_normalize_params": [{"mean": list(m), "std": list(s), "inplace": False}
                                     for m, s in zip(self.means, self.stds)],
            "tvf_do_letterbox": False,
            "tvf_letterbox_fill": None,
            "center_crop": self.center_crop,
        }

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        _write_json(os.path.join(path, PREPROCESSOR_CONFIG_NAME), self.to_dict())
        _write_json(os.path.join(path, PROCESSOR_CONFIG_NAME), {"processor_class": "PrismaticProcessor"})
        self.tokenizer.save_pretrained(path, pad_token_id=self.pad_token_id)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: OpenVLAOFTConfig | None = None,
                        **kwargs: Any) -> OpenVLAOFTProcessor:
        """Read the tokenizer and `preprocessor_config.json` (image settings from `config` when it is absent)."""
        path = os.fspath(path)
        if config is None:
            config = OpenVLAOFTConfig.from_pretrained(path)
        tokenizer = PromptTokenizer.from_pretrained(path, bos_token_id=config.text_config.get("bos_token_id", 1))
        pre_file = os.path.join(path, PREPROCESSOR_CONFIG_NAME)
        if not os.path.isfile(pre_file):
            return cls.from_config(config, tokenizer, **kwargs)
        with open(pre_file, encoding="utf-8") as f:
            pre = json.load(f)
        sizes = [int(s[-1]) for s in pre.get("input_sizes", [])] or list(config.image_sizes)
        means = pre.get("means") or [p["mean"] for p in pre.get("tvf_normalize_params", [])]
        stds = pre.get("stds") or [p["std"] for p in pre.get("tvf_normalize_params", [])]
        if not means or not stds:
            return cls.from_config(config, tokenizer, **kwargs)
        kwargs.setdefault("center_crop", pre.get("center_crop"))
        return cls(tokenizer, sizes, means, stds, pad_token_id=config.pad_token_id,
                   image_resize_strategy=pre.get("image_resize_strategy", "resize-naive"), **kwargs)
