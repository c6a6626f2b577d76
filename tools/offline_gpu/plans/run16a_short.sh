# Run 16a, what ~12 minutes of device time allow: demos and a 2-min SFT on pick_and_place and stacking, then
# eval_sft+ppo (64 episodes per task; PPO as run 16 for 3 min). Checks the joined stage on one GPU and its
# cost to PPO's rate, and where desired_kl puts the VLA's learning rate.
. tools/offline_gpu/plans/lib.sh
export TASKS=pick_and_place,stacking EVAL_MODES=greedy,sampled:1:3
RL="actor.optim.lr=2e-5 rollout.sampling_params.top_k=3 algorithm.update_epoch=1 algorithm.desired_kl=0.0015"
stage demos bash $P demos
stage sft env SFT_MINUTES=2 bash $P sft
stage eval_sft+ppo env EVAL_EPISODES=64 RL_MINUTES=3 EXTRA_RL="$RL algorithm.recompute_log_probs=true" \
  bash $P eval_sft+ppo
finish
