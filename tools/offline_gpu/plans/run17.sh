# Run 17: a stronger start on the pick-style tasks. The CPU proxy (docs/learning/README.md, session 20) gains
# +8 to +18 points greedy under top-3 PPO from a middling clone (46 %) in 492k env steps (+7 left at 983k)
# against 0 to +7 from a weak one (10 %), the VLA's level after SFT; so this run spends its SFT on
# pick_and_place and stacking alone, with twice the demonstrations (500 per task) and 8 minutes (~2.4 times
# run 13's samples per task), then run 16's PPO (desired_kl, recompute_log_probs, top-3) beside the SFT
# evaluation. ~24 minutes on one H200.
# RUN_SFT_MINUTES / RUN_RL_MINUTES shorten it where less device time is left.
. tools/offline_gpu/plans/lib.sh
export TASKS=pick_and_place,stacking EVAL_MODES=greedy,sampled:1:3 DEMOS_PER_TASK=500
RL="actor.optim.lr=2e-5 rollout.sampling_params.top_k=3 algorithm.update_epoch=1 algorithm.desired_kl=0.0015"
stage demos bash $P demos
stage sft env SFT_MINUTES=${RUN_SFT_MINUTES:-8} LABEL_SIGMA=1 bash $P sft
stage eval_sft+ppo env RL_MINUTES=${RUN_RL_MINUTES:-7} EXTRA_RL="$RL algorithm.recompute_log_probs=true" \
  bash $P eval_sft+ppo
stage eval_rl env EVAL_RL=ppo bash $P eval_rl
finish
