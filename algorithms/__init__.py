"""PPO and GRPO for VLA policies on Stable-Baselines3 (SPEC §6).

    from algorithms import PPO, GRPO
    model = PPO(OpenVLAOFTPolicy, vec_env, n_steps=64, batch_size=16, micro_batch_size=2, clip_ratio_low=0.2,
                clip_ratio_high=0.28, value_lr=3e-3, policy_kwargs={...})
    model.learn(total_timesteps)

`objectives` holds the losses as pure functions, `buffers` the lean rollout storage, `metrics` the
metric names, `logging` the TensorBoard / W&B / SwanLab logger, `callbacks` the video recorder and
`group_reset` the grouped-reset vector env of GRPO.
"""

from algorithms.buffers import LeanRolloutBuffer
from algorithms.callbacks import VideoRecorderCallback
from algorithms.group_reset import GroupResetVecEnv
from algorithms.grpo import GRPO
from algorithms.logging import make_logger
from algorithms.ppo import PPO

__all__ = ["GRPO", "PPO", "GroupResetVecEnv", "LeanRolloutBuffer", "VideoRecorderCallback", "make_logger"]
