"""Training across processes, GPUs and nodes with Ray (SPEC §7).

- `placement`: `cluster.component_placement` -> the devices of the env, rollout and actor workers (pure).
- `config`: the schema of a run (`examples/embodiment/config/*.yaml`) and its validation.
- `env_worker`, `vec_env`: env workers as Ray actors and `RayVecEnv`, an SB3 VecEnv over them
  (stages for pipelining, restarts of dead workers).
- `rollout_worker`: inference workers on the rollout devices, with weights synced from the trainer.
- `pipeline`: `PipelinedPPO` / `PipelinedGRPO`, `algorithms.PPO` / `GRPO` with pipelined rollouts.
- `data_parallel`: the data-parallel actor (DDP / FSDP updates over torch.distributed ranks on shards of
  the rollout); `actor_group`: its ranks 1.. as Ray actors beside the runner (rank 0).
- `cluster`, `runner`: Ray connection, node reservation, and the runner that trains.

Modules import Ray and torch only when used; nothing is imported here.
"""
