"""OpenVLA-OFT as a Stable-Baselines3 policy, usable by PPO unchanged.

    from stable_baselines3 import PPO
    from vla_policies import OpenVLAOFTPolicy

    model = PPO(OpenVLAOFTPolicy, env, policy_kwargs={"model_path": "/ckpt/openvla-oft-behavior",
                                                     "unnorm_key": "behavior_turn_on_radio", "lora_rank": 32})

The policy reads the SB3-facing observation of `Behavior-R1Pro-v0` (SPEC §2): `head_rgb` [B, 3, H, W]
and `wrist_rgb` [B, 2, 3, H, W] images with values 0..255 (head, left wrist, right wrist), `proprio`
[B, 61], and `instruction` [B, 512] ASCII codes (any numeric dtype: SB3 buffers may return float32).
One forward pass decodes a whole chunk: the action is the flattened chunk [B, K*23], step k at
`[k*23:(k+1)*23]`, matching the chunked action space `Box(tile(ACTION_LOW, K), tile(ACTION_HIGH, K))`.

Log-probs and entropies are sums over the K*23 action tokens (the chunk is one SB3 action);
`per_token=True` gives them per token, [B, K*23], for token-level PPO ratios. The value is the
chunk-level value head on the last prompt token.

Nothing here re-initialises weights: BasePolicy has no orthogonal init, and the model is used as
loaded (or as its preset initialised it).

For RLinf's Behavior checkpoint (reference §4.5) its settings are: `unnorm_key="behavior_turn_on_radio"`,
`center_crop=0.9`, chunks of 8 (the default), sampling temperature 1.0 in training and greedy or 0.6
in evaluation, top-k 50. RLinf requests flash-attention, which its transformers fork runs causally;
if the checkpoint's greedy actions look wrong, try `config_overrides={"causal_attention": True}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from behavior_gym.spaces import ACTION_DIM, decode_instruction

from .openvla_oft.action_tokenizer import ActionNormalizer, ActionTokenDistribution
from .openvla_oft.configuration_openvla_oft import OpenVLAOFTConfig
from .openvla_oft.modeling_openvla_oft import OpenVLAOFTForActionPrediction, OpenVLAOFTOutput, build_model
from .openvla_oft.processing_openvla_oft import OpenVLAOFTProcessor

logger = logging.getLogger(__name__)

Observation = dict[str, Any]


def _resolve_dtype(torch_dtype: torch.dtype | str | None) -> torch.dtype:
    if torch_dtype is None or torch_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    dtype = getattr(torch, str(torch_dtype), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}; use 'auto', 'bfloat16', 'float32' or a torch.dtype")
    return dtype


class OpenVLAOFTPolicy(BasePolicy):
    """Stable-Baselines3 policy around `OpenVLAOFTForActionPrediction`.

    SB3 constructs it as `OpenVLAOFTPolicy(observation_space, action_space, lr_schedule, **policy_kwargs)`.

    Args:
        observation_space: the SB3-facing Dict observation space (images, proprio, instruction codes).
        action_space: the chunked action Box of shape (K * action_dim,); K sets `num_action_chunks`.
        lr_schedule: SB3's learning-rate schedule (its value at progress 1 is the optimizer's lr).
        use_sde: must be False (the policy's noise is the token sampling).
        model_path: a checkpoint directory (released OpenVLA / OpenVLA-OFT / RLinf layout).
        preset: "tiny", "small" or "7.5b": a randomly initialised model of that configuration.
        config_overrides: config fields to change when loading or building (e.g. `num_images_in_input`).
        model, processor: an already built model (and its processor) instead of model_path / preset.
        unnorm_key: which dataset's `norm_stats` de-normalise actions (needed if there are several).
        norm_stats: statistics to use instead of the checkpoint's. Without either, actions in [-1, 1]
            are mapped onto the action space's bounds.
        temperature, top_k: sampling settings, also used for log-probs and entropy (RLinf: T=1.0 in
            training; greedy `deterministic=True` for evaluation).
        lora_rank, lora_alpha, lora_dropout, lora_target_modules: LoRA through peft (rank 0 = none, train
            everything). With LoRA only the adapters and the value head (and proprio projector) train.
        lora_adapter_path: a LoRA adapter directory (`save_lora_adapter`) to load on top of the model;
            its adapter_config.json sets rank and targets.
        freeze_vision_backbone: without LoRA, keep the vision towers frozen.
        torch_dtype: model dtype; "auto" = bfloat16 when CUDA is available, else float32.
        model_device: where to build or load the model ("cuda", "auto" = CUDA when available; default
            CPU). SB3 then moves the policy to the algorithm's device; building a 7.5B preset straight
            on the GPU avoids initialising 7.5B random weights on the CPU (minutes).
        attn_implementation: "sdpa" (default) or "eager".
        center_crop: crop this fraction of the image area before resizing (OFT evaluation uses 0.9).
        image_keys: observation keys holding images, in model order ([B,3,H,W] or [B,n,3,H,W]).
        instruction_key, proprio_key: observation keys of the instruction codes and proprioception.
        gradient_checkpointing: recompute activations in the backward pass (vision towers and Llama).
        optimizer_class, optimizer_kwargs: optimizer over the trainable parameters (AdamW by default).
        strict_load: refuse checkpoint weights that have no place in the model.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        use_sde: bool = False,
        *,
        model_path: str | None = None,
        preset: str | None = None,
        config_overrides: dict[str, Any] | None = None,
        model: OpenVLAOFTForActionPrediction | None = None,
        processor: OpenVLAOFTProcessor | None = None,
        unnorm_key: str | None = None,
        norm_stats: dict[str, Any] | None = None,
        temperature: float = 1.0,
        top_k: int = 0,
        lora_rank: int = 0,
        lora_alpha: int | None = None,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | str | None = None,
        lora_adapter_path: str | None = None,
        freeze_vision_backbone: bool = False,
        torch_dtype: torch.dtype | str | None = "auto",
        model_device: torch.device | str | None = None,
        attn_implementation: str | None = None,
        center_crop: float | None = None,
        image_keys: Sequence[str] = ("head_rgb", "wrist_rgb"),
        instruction_key: str = "instruction",
        proprio_key: str = "proprio",
        gradient_checkpointing: bool = False,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        strict_load: bool = True,
    ):
        if use_sde:
            raise ValueError("OpenVLAOFTPolicy samples discrete action tokens; use_sde must be False")
        if not isinstance(action_space, spaces.Box) or len(action_space.shape) != 1:
            raise ValueError(f"OpenVLAOFTPolicy needs a flat Box action space (an action chunk of shape "
                             f"(K * {ACTION_DIM},)), got {action_space}")
        super().__init__(observation_space, action_space, optimizer_class=optimizer_class,
                         optimizer_kwargs=optimizer_kwargs, squash_output=False, normalize_images=False)
        self._init_kwargs = dict(
            model_path=model_path, preset=preset, config_overrides=config_overrides, unnorm_key=unnorm_key,
            norm_stats=norm_stats, temperature=temperature, top_k=top_k, lora_rank=lora_rank, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, lora_target_modules=lora_target_modules, lora_adapter_path=lora_adapter_path,
            freeze_vision_backbone=freeze_vision_backbone, torch_dtype=torch_dtype,
            model_device=model_device, attn_implementation=attn_implementation, center_crop=center_crop,
            image_keys=tuple(image_keys),
            instruction_key=instruction_key, proprio_key=proprio_key, gradient_checkpointing=gradient_checkpointing,
            optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs, strict_load=strict_load,
        )
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.image_keys = tuple(image_keys)
        self.instruction_key = instruction_key
        self.proprio_key = proprio_key
        self._check_observation_space(observation_space)

        dtype = _resolve_dtype(torch_dtype)
        overrides = dict(config_overrides or {})
        if attn_implementation is not None:
            overrides["attn_implementation"] = attn_implementation
        if model_device == "auto":
            model_device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.processor = self._build_model(model, processor, model_path, preset, overrides, dtype,
                                                       strict_load, center_crop, model_device)
        cfg = self.model.config
        width = action_space.shape[0]
        if width != cfg.num_action_tokens:
            raise ValueError(f"the action space has {width} values but the model decodes {cfg.num_action_chunks} x "
                             f"{cfg.action_dim} = {cfg.num_action_tokens}; use a chunked action space of "
                             f"{cfg.num_action_chunks} steps or set config_overrides={{'num_action_chunks': ...}}")
        self.action_normalizer = self._build_normalizer(unnorm_key, norm_stats)
        self.proprio_normalizer = self._build_proprio_normalizer(unnorm_key, norm_stats)
        self._collapsed = self.action_normalizer.collapsed_dims(self.model.action_tokenizer).repeat(
            cfg.num_action_chunks)
        if self._collapsed.any():
            logger.warning("action dimensions %s have an (almost) empty range in %s: every token gives the same "
                           "action there, so they carry no log-prob or entropy",
                           np.flatnonzero(self._collapsed[: cfg.action_dim].numpy()).tolist(),
                           self.action_normalizer.name)
        self._instruction_cache: dict[bytes, str] = {}

        if lora_adapter_path is not None:
            self.model.load_lora_adapter(lora_adapter_path)
            if lora_rank > 0 and lora_rank != self.model.lora_config.r:
                raise ValueError(f"lora_rank={lora_rank} but the adapter in {lora_adapter_path!r} has rank "
                                 f"{self.model.lora_config.r}; leave lora_rank at 0 to take the adapter's")
        elif lora_rank > 0:
            self.model.add_lora(lora_rank, lora_alpha, lora_target_modules, lora_dropout)
        elif freeze_vision_backbone:
            self.model.vision_backbone.requires_grad_(False)
        if gradient_checkpointing:
            self.enable_gradient_checkpointing()
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(params, lr=lr_schedule(1), **self.optimizer_kwargs)

    # ------------------------------------------------------------------ construction helpers
    def _check_observation_space(self, observation_space: spaces.Space) -> None:
        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(f"OpenVLAOFTPolicy reads a Dict observation (images, instruction, proprio), got "
                             f"{observation_space}")
        missing = [k for k in (*self.image_keys, self.instruction_key) if k not in observation_space.spaces]
        if missing:
            raise ValueError(f"the observation space lacks {missing}; it has {sorted(observation_space.spaces)}. "
                             "Use the SB3-facing observation (instruction as uint8 codes) or set image_keys / "
                             "instruction_key")

    @staticmethod
    def _build_model(model, processor, model_path, preset, overrides, dtype, strict, center_crop, device):
        sources = [name for name, v in (("model", model), ("model_path", model_path), ("preset", preset)) if v]
        if len(sources) != 1:
            raise ValueError("pass exactly one of model_path= (a checkpoint directory), preset= ('tiny', 'small', "
                             f"'7.5b') or model= (a built model); got {sources or 'none'}")
        kwargs = {"center_crop": center_crop} if center_crop is not None else {}
        if model is not None:
            if overrides:
                raise ValueError("config_overrides cannot change an already built model")
            model = model.to(device) if device is not None else model
            model = model.set_dtype(dtype)
            processor = processor or OpenVLAOFTProcessor.from_config(model.config, **kwargs)
        elif model_path is not None:
            model = OpenVLAOFTForActionPrediction.from_pretrained(model_path, torch_dtype=dtype, device=device,
                                                                  strict=strict, **overrides)
            processor = processor or OpenVLAOFTProcessor.from_pretrained(model_path, model.config, **kwargs)
        else:
            config = OpenVLAOFTConfig.from_preset(preset, **overrides)
            model = build_model(config, device=device, torch_dtype=dtype)
            processor = processor or OpenVLAOFTProcessor.from_config(config, **kwargs)
        return model, processor

    def _build_normalizer(self, unnorm_key: str | None, norm_stats: dict[str, Any] | None) -> ActionNormalizer:
        if norm_stats is not None or self.model.norm_stats:
            return self.model.get_action_normalizer(unnorm_key, norm_stats)
        if unnorm_key is not None:
            raise KeyError(f"unnorm_key {unnorm_key!r} was given but the model has no norm_stats")
        a = self.model.config.action_dim
        low, high = np.asarray(self.action_space.low[:a]), np.asarray(self.action_space.high[:a])
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError("the model has no norm_stats and the action space is unbounded; pass norm_stats")
        logger.info("no norm_stats: mapping normalised actions [-1, 1] onto the action space bounds")
        return ActionNormalizer(low, high, name="action_space_bounds")

    def _build_proprio_normalizer(self, unnorm_key, norm_stats) -> ActionNormalizer | None:
        stats = norm_stats if norm_stats is not None else self.model.norm_stats
        if not self.model.config.use_proprio or not stats:
            return None
        key = unnorm_key if unnorm_key is not None else next(iter(stats))
        if "proprio" not in stats.get(key, {}):
            return None
        return ActionNormalizer.from_norm_stats(stats, key, self.model.config.action_normalization, key="proprio")

    def enable_gradient_checkpointing(self) -> None:
        self.model.enable_gradient_checkpointing()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._init_kwargs)
        return data

    # ------------------------------------------------------------------ observations
    def _instructions(self, obs: Observation) -> list[str]:
        raw = obs[self.instruction_key]
        if isinstance(raw, str):
            return [raw]
        if isinstance(raw, (list, tuple)) and all(isinstance(t, str) for t in raw):
            return list(raw)
        codes = raw.detach() if isinstance(raw, torch.Tensor) else torch.as_tensor(np.asarray(raw))
        if codes.ndim == 1:
            codes = codes[None]
        codes = codes.float().round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        out = []
        for row in codes:
            key = row.tobytes()
            text = self._instruction_cache.get(key)
            if text is None:
                text = decode_instruction(row)
                if len(self._instruction_cache) > 4096:
                    self._instruction_cache.clear()
                self._instruction_cache[key] = text
            out.append(text)
        return out

    def _images(self, obs: Observation) -> torch.Tensor:
        parts = []
        for key in self.image_keys:
            if key not in obs:
                raise KeyError(f"observation has no {key!r} (keys: {sorted(obs)})")
            x = torch.as_tensor(obs[key], device=self.device)
            parts.append(x[:, None] if x.ndim == 4 else x)
        images = torch.cat(parts, dim=1)
        n = self.model.config.num_images_in_input
        if images.shape[1] < n:
            raise ValueError(f"the model takes {n} images but the observation's {list(self.image_keys)} hold "
                             f"{images.shape[1]}")
        return images[:, :n]

    def prepare_inputs(self, obs: Observation) -> dict[str, torch.Tensor]:
        """Model inputs (pixel_values, input_ids, attention_mask[, proprio]) for an observation batch."""
        inputs = self.processor(self._instructions(obs), self._images(obs), device=self.device,
                                dtype=self.model.dtype)
        if self.model.config.use_proprio:
            proprio = torch.as_tensor(obs[self.proprio_key], device=self.device).float()
            if self.proprio_normalizer is not None:
                proprio = self.proprio_normalizer.normalize(proprio).float()
            inputs["proprio"] = proprio
        return inputs

    # ------------------------------------------------------------------ actions <-> tokens
    def actions_to_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """Environment actions [B, K*A] -> action token ids [B, K*A] (vocabulary ids, 31744..31999 for Llama-2)."""
        return self.model.action_tokenizer.encode(self.action_normalizer.normalize(torch.as_tensor(actions)))

    def tokens_to_actions(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Action token ids [B, K*A] -> environment actions [B, K*A] (float32)."""
        return self.action_normalizer.unnormalize(self.model.action_tokenizer.decode(torch.as_tensor(token_ids)))

    def _bins_to_actions(self, bins: torch.Tensor) -> torch.Tensor:
        return self.action_normalizer.unnormalize(self.model.action_tokenizer.decode_bins(bins))

    def _actions_to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        return self.model.action_tokenizer.ids_to_bins(self.actions_to_tokens(actions))

    # ------------------------------------------------------------------ SB3 interface
    def _run(self, obs: Observation) -> tuple[OpenVLAOFTOutput, ActionTokenDistribution]:
        out = self.model(**self.prepare_inputs(obs))
        dist = ActionTokenDistribution(out.action_logits, self.temperature, self.top_k, self._collapsed)
        return out, dist

    @staticmethod
    def _values(out: OpenVLAOFTOutput) -> torch.Tensor | None:
        # None without a value head (config.add_value_head=False): GRPO needs no critic
        return None if out.values is None else out.values.float()[:, None]

    def forward(self, obs: Observation, deterministic: bool = False, per_token: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or, deterministic, take the argmax of) one action chunk per observation.

        Returns actions [B, K*A] (float32), values [B, 1] (None without a value head) and log-probs [B]
        ([B, K*A] with per_token).
        """
        out, dist = self._run(obs)
        bins = dist.mode() if deterministic else dist.sample()
        log_prob = dist.log_prob(bins)
        return self._bins_to_actions(bins), self._values(out), log_prob if per_token else log_prob.sum(-1)

    def evaluate_actions(self, obs: Observation, actions: torch.Tensor, per_token: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Values [B, 1] (None without a value head), log-probs and entropies ([B], or [B, K*A] with per_token)
        of stored actions."""
        out, dist = self._run(obs)
        bins = self._actions_to_bins(torch.as_tensor(actions, device=self.device))
        log_prob, entropy = dist.log_prob(bins), dist.entropy()
        if not per_token:
            log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        return self._values(out), log_prob, entropy

    def get_distribution(self, obs: Observation) -> ActionTokenDistribution:
        """The action-token distribution (bins) for an observation batch."""
        return self._run(obs)[1]

    def predict_values(self, obs: Observation) -> torch.Tensor:
        """Chunk-level values [B, 1]; a model without a value head has none to give."""
        if self.model.value_head is None:
            raise RuntimeError("this policy has no value head (config add_value_head=False), so it cannot predict "
                               "values: train it with GRPO, or build it with a value head for PPO")
        return self._values(self.model(**self.prepare_inputs(obs)))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        return self.forward(observation, deterministic=deterministic)[0]

    # ------------------------------------------------------------------ conveniences
    def trainable_parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """Trainable parameters split into the value head and the rest (for separate learning rates)."""
        groups: dict[str, list[torch.nn.Parameter]] = {"policy": [], "value_head": []}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups["value_head" if name.startswith("value_head.") else "policy"].append(p)
        return groups

    def save_pretrained(self, path: str, **kwargs: Any) -> None:
        """Save the model (LoRA merged) and processor as a released-layout checkpoint directory."""
        self.model.save_pretrained(path, processor=self.processor, **kwargs)

    def save_lora_adapter(self, path: str, base_model_path: str | None = None) -> None:
        """Save only the LoRA adapters and the value head in peft's format (load with `lora_adapter_path=`)."""
        self.model.save_lora_adapter(path, base_model_path=base_model_path or self._init_kwargs["model_path"])

    def enable_fast_inference(self, **kwargs: Any) -> None:
        """Compiled regions and CUDA graphs for rollouts, FP8 GEMMs with `fp8=True` (see
        `OpenVLAOFTForActionPrediction.enable_fast_inference`; FP8 makes the model inference-only)."""
        self.model.enable_fast_inference(**kwargs)

    def disable_fast_inference(self) -> None:
        self.model.disable_fast_inference()

    @property
    def fast_inference(self) -> bool:
        """Whether fast inference is on (`enable_fast_inference`)."""
        return self.model._fast_inference is not None

    def set_sampling(self, temperature: float | None = None, top_k: int | None = None) -> None:
        if temperature is not None:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            self.temperature = float(temperature)
        if top_k is not None:
            self.top_k = int(top_k)


def make_lr_schedule(lr: float) -> Callable[[float], float]:
    """A constant SB3 schedule, for building the policy outside an algorithm."""
    return lambda _progress: lr
