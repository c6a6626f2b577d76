#!/usr/bin/env bash
# The learning proof on the embedded backend: expert demos -> SFT -> PPO and GRPO -> held-out evaluation.
#
#   bash examples/embodiment/run_learning_pipeline.sh                 # every stage, in order
#   bash examples/embodiment/run_learning_pipeline.sh sft eval_sft    # some stages
#   bash examples/embodiment/run_learning_pipeline.sh eval_sft+ppo    # stages joined by + run at once (one GPU
#                                                                     # holds both; the SFT evaluation overlaps RL)
#
# Stages: demos, sft, eval_sft, ppo, grpo, eval_rl, curves; and diagnose (where the SFT policy fails
# pick_and_place and stacking: open-loop errors, closed-loop reach/lift, contact sheets in $WORK/diagnosis). Each one resumes from what an earlier
# (interrupted or time-limited) run left in $WORK, so the pipeline can run in pieces of minutes.
# Settings come from the environment (defaults in brackets: run 13's recipe, README "Does it learn?";
# the RL stages' settings are in the behavior_{ppo,grpo}_openvlaoft_skills configs):
#   WORK [runs/learning]  NUM_WORKERS [nproc]  DEMOS_PER_TASK [250]  SFT_MINUTES [5.5]  SFT_PRESET [small-p28]
#   LABEL_SIGMA [2] and AUX_POSITION_WEIGHT [1.0] (SFT's train.label_sigma and train.aux_position_weight)
#   SFT_STEPS [0: as many as fit in SFT_MINUTES]  RL_MINUTES [5.5]  EVAL_EPISODES [100]  EVAL_ENVS [32]  TASKS [pick_and_place,stacking,open_drawer,turning_on_radio]
#   RL_TASKS [TASKS] (the tasks ppo and grpo train on; e.g. two of them while eval_sft+ppo evaluates all four)
#   EXTRA_DEMOS, EXTRA_SFT, EXTRA_RL (more Hydra overrides for those stages, e.g.
#   EXTRA_SFT="train.batch_size=128", EXTRA_DEMOS="recovery_offset=0.1")
#   EVAL_RL [ppo grpo] (which RL runs eval_rl evaluates)
#   EVAL_MODES [greedy,sampled,sampled:1:3] (sampled:T samples at temperature T, e.g. RL's rollout.sampling_params.temperature_train;
#     sampled:T:K among the K most likely tokens, as rollout.sampling_params.top_k=K)
#   LAYOUT [the default, tabletop] (the skill tasks' layout in every stage: tabletop or mobile)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
WORK="${WORK:-runs/learning}"
NUM_WORKERS="${NUM_WORKERS:-$(nproc)}"
TASKS="${TASKS:-pick_and_place,stacking,open_drawer,turning_on_radio}"
EVAL_ENVS="${EVAL_ENVS:-32}"
EVAL_EPISODES="${EVAL_EPISODES:-100}"
RL_MINUTES="${RL_MINUTES:-5.5}"
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYTHONUNBUFFERED=1
mkdir -p "$WORK"

latest_checkpoint() {  # the newest checkpoints/global_step_N/actor.zip of an RL config's runs, or nothing
  { ls -d "$WORK"/logs/*-"$1"/checkpoints/global_step_*/actor.zip 2>/dev/null || true; } \
    | awk -F'global_step_' '{split($2, a, "/"); print a[1], $0}' | sort -n | tail -1 | cut -d' ' -f2
}

rl() {  # rl CONFIG: train (or continue) an RL run from the SFT checkpoint for RL_MINUTES
  local resume; resume="$(latest_checkpoint "$1")"
  bash "$HERE/run_embodiment.sh" "$1" actor.model.model_path="$WORK/sft/model" env.train.tasks="[${RL_TASKS:-$TASKS}]" \
    runner.logger.log_path="$WORK/logs" runner.max_minutes="$RL_MINUTES" video_cfg.save_video="${SAVE_VIDEO:-true}" \
    ${LAYOUT:+env.train.layout="$LAYOUT"} \
    ${resume:+runner.resume_dir="$(dirname "$resume")"} ${EXTRA_RL:-}
}

evaluate() {  # evaluate NAME key=value: held-out evaluation into $WORK/eval/NAME.json
  "$PY" "$HERE/evaluate.py" "$2" tasks="[$TASKS]" num_envs="$EVAL_ENVS" episodes_per_task="$EVAL_EPISODES" \
    modes="[${EVAL_MODES:-greedy,sampled,sampled:1:3}]" out="$WORK/eval/$1.json" ${LAYOUT:+layout="$LAYOUT"}
}

run_stage() {  # run_stage NAME
  echo "=== $1 ($(date +%T))"
  case "$1" in
    demos) "$PY" "$HERE/collect_demos.py" tasks="[$TASKS]" episodes_per_task="${DEMOS_PER_TASK:-250}" \
             num_workers="$NUM_WORKERS" out_dir="$WORK/demos" ${LAYOUT:+layout="$LAYOUT"} ${EXTRA_DEMOS:-} ;;
    sft) "$PY" "$HERE/sft.py" demos="[$WORK/demos]" out_dir="$WORK/sft" model.preset="${SFT_PRESET:-small-p28}" \
           load_workers="$NUM_WORKERS" train.steps="${SFT_STEPS:-0}" train.max_minutes="${SFT_MINUTES:-5.5}" \
           train.label_sigma="${LABEL_SIGMA:-2}" train.aux_position_weight="${AUX_POSITION_WEIGHT:-1.0}" ${EXTRA_SFT:-} ;;
    eval_sft) evaluate sft model_path="$WORK/sft/model" ;;
    ppo) rl behavior_ppo_openvlaoft_skills ;;
    grpo) rl behavior_grpo_openvlaoft_skills ;;
    eval_rl)
      local cfg ckpt
      for cfg in ${EVAL_RL:-ppo grpo}; do
        ckpt="$(latest_checkpoint "behavior_${cfg}_openvlaoft_skills")"
        if [ -n "$ckpt" ]; then evaluate "$cfg" checkpoint="$ckpt"; else echo "no $cfg checkpoint yet"; fi
      done ;;
    diagnose) "$PY" "$HERE/diagnose_policy.py" "$WORK/sft/model" --out "$WORK/diagnosis" ;;
    curves) "$PY" "$HERE/plot_curves.py" --logs "$WORK/logs" --sft "$WORK/sft" --out "${CURVES_DIR:-docs}" ;;
  esac
}

STAGES="${*:-demos sft eval_sft ppo grpo eval_rl curves}"
for s in ${STAGES//+/ }; do  # every name checked before the first stage spends its minutes
  case "$s" in
    demos|sft|eval_sft|ppo|grpo|eval_rl|curves|diagnose) ;;
    *) echo "unknown stage $s (demos sft eval_sft ppo grpo eval_rl curves diagnose; a+b runs a and b at once)" >&2
       exit 2 ;;
  esac
done

for s in $STAGES; do
  if [[ "$s" != *+* ]]; then run_stage "$s"; continue; fi
  # a+b: the stages at once, each line prefixed with its stage; fails when one of them fails
  pids=()
  for part in ${s//+/ }; do
    ( set -o pipefail; run_stage "$part" 2>&1 | sed -u "s/^/[$part] /" ) &
    pids+=("$!")
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "stage $s failed" >&2; exit 1; }
done
