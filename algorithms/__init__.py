"""PPO and GRPO for VLA policies on Stable-Baselines3 (SPEC §6).

    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from algorithms import GRPO, PPO, VideoRecorderCallback, evaluate, make_logger
    from behavior_gym.wrappers import ActionChunkWrapper, SB3ObservationWrapper
    from vla_policies import OpenVLAOFTPolicy

    make = lambda: SB3ObservationWrapper(ActionChunkWrapper(
        gym.make("behavior_gym:Behavior-R1Pro-v0", task="pick_and_place", obs_every=8), chunk=8))
    model = PPO(OpenVLAOFTPolicy, make_vec_env(make, n_envs=8), n_steps=64, batch_size=16, micro_batch_size=2,
                clip_ratio_low=0.2, clip_ratio_high=0.28, clip_range_vf=0.2, value_lr=3e-3,
                policy_kwargs={"model_path": "/ckpt/openvla-oft-behavior", "lora_rank": 32})
    # or GRPO(..., group_size=4): groups of 4 envs start each episode from the same seeded state
    model.set_logger(make_logger("logs/ppo", ["tensorboard", "wandb"], mode="offline"))
    model.learn(100_000, callback=VideoRecorderCallback(info_on_video=True), progress_bar=True)
    model.save("logs/ppo/checkpoint")  # atomic; PPO.load("logs/ppo/checkpoint.zip", env=...) resumes
    model.save("logs/ppo/adapters", trainable_only=True)  # LoRA + value head only; the base from model_path
    stats = evaluate(model, eval_env, episodes=20)  # success_rate, q_score, episode_len, per_task

`objectives` holds the losses as pure functions, `buffers` the lean rollout storage, `metrics` the
metric names, `logging` the TensorBoard / W&B / SwanLab logger, `callbacks` the video recorder and
`group_reset` the grouped-reset vector env of GRPO, `evaluation` the `evaluate` helper (success rate,
q_score and episode length per task).
"""

from algorithms.buffers import LeanRolloutBuffer
from algorithms.callbacks import VideoRecorderCallback
from algorithms.evaluation import evaluate
from algorithms.group_reset import GroupResetVecEnv
from algorithms.grpo import GRPO
from algorithms.logging import make_logger
from algorithms.ppo import PPO

__all__ = ["GRPO", "PPO", "GroupResetVecEnv", "LeanRolloutBuffer", "VideoRecorderCallback", "evaluate", "make_logger"]
