# Run 17: a stronger start on the pick-style tasks, and both RL columns. The CPU proxy
# (docs/learning/README.md, sessions 20-21) gains +8 to +18 points greedy under top-3 or top-5 PPO from a
# middling clone (46 %) in 328k-492k env steps (+7 left at 983k; GRPO +1 on average over three seeds) against
# 0 to +7 from a weak one (10 %), the VLA's level after SFT; so this run spends its SFT on pick_and_place and
# stacking alone, with twice the demonstrations (500 per task) and 7 minutes (~2 times run 13's samples per
# task), on the pipeline's sigma-2 targets (a middling proxy clone on sigma-1 ones starts at 34 % against 46 %
# and gains less). Then run 16's PPO (desired_kl, recompute_log_probs, top-3) beside the SFT evaluation for
# 4.5 minutes (~1,700 env steps/s in run 16a: ~460k env steps), then GRPO with the same settings for 4 minutes
# beside PPO's evaluation, then GRPO's evaluation. ~26 minutes on one H200.
# RUN_SFT_MINUTES / RUN_RL_MINUTES / RUN_GRPO_MINUTES shorten it where less device time is left
# (RUN_GRPO_MINUTES=0: no GRPO).
. tools/offline_gpu/plans/lib.sh
export TASKS=pick_and_place,stacking EVAL_MODES=greedy,sampled:1:3 DEMOS_PER_TASK=500
RL="actor.optim.lr=2e-5 rollout.sampling_params.top_k=3 algorithm.update_epoch=1 algorithm.desired_kl=0.0015"
RL="$RL algorithm.recompute_log_probs=true"
stage demos bash $P demos
stage sft env SFT_MINUTES=${RUN_SFT_MINUTES:-7} bash $P sft
stage eval_sft+ppo env RL_MINUTES=${RUN_RL_MINUTES:-4.5} EXTRA_RL="$RL" bash $P eval_sft+ppo
if [ "${RUN_GRPO_MINUTES:-4}" != 0 ]; then
  # PPO's evaluation beside GRPO's training, so that it is in hand should the machine go before GRPO ends
  stage eval_rl+grpo env EVAL_RL=ppo RL_MINUTES=${RUN_GRPO_MINUTES:-4} EXTRA_RL="$RL" bash $P eval_rl+grpo
  stage eval_grpo env EVAL_RL=grpo bash $P eval_rl
else
  stage eval_rl env EVAL_RL=ppo bash $P eval_rl
fi
finish
