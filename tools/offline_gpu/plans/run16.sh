# Run 16: run 15 (docs/learning/README.md) + algorithm.desired_kl=0.0015 + algorithm.recompute_log_probs=true
# + SFT's train.label_sigma=1; the SFT evaluation overlaps PPO (eval_sft+ppo), which with the
# faster demo loader gives PPO 12 minutes instead of run 15's 10 in about the same ~24 minutes on one H200.
# RUN_SFT_MINUTES / RUN_RL_MINUTES shorten it where less device time is left.
. tools/offline_gpu/plans/lib.sh
RL="actor.optim.lr=2e-5 rollout.sampling_params.top_k=3 algorithm.update_epoch=1 algorithm.desired_kl=0.0015"
export EVAL_MODES=greedy,sampled:1:3
stage demos bash $P demos
stage sft env SFT_MINUTES=${RUN_SFT_MINUTES:-5} LABEL_SIGMA=1 bash $P sft
stage eval_sft+ppo env RL_TASKS=pick_and_place,stacking RL_MINUTES=${RUN_RL_MINUTES:-12} \
  EXTRA_RL="$RL algorithm.recompute_log_probs=true" bash $P eval_sft+ppo
stage eval_rl env EVAL_RL=ppo bash $P eval_rl
finish
