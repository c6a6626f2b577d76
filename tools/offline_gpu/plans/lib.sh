# Sourced by the plans: `stage NAME CMD...` runs a pipeline stage unless FROM names a later one; a failure
# ends the plan with PLAN_FAIL NAME (session.sh's RESTART=NAME goes on from there).
R="${R:-/tmp/w}"
cd "$R/repo" || exit 1
export WORK=$R/learning PYTHON=python3 SAVE_VIDEO=false MUJOCO_GL=egl PYTHONUNBUFFERED=1
P=examples/embodiment/run_learning_pipeline.sh
date; nproc; nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
grep -m1 "model name" /proc/cpuinfo; echo "commit $(cat "$R/commit" 2>/dev/null || echo unknown)"
_go=0; [ -z "${FROM:-}" ] && _go=1
stage() {
  [ "$1" = "${FROM:-}" ] && _go=1
  [ $_go = 1 ] || { echo "skip $1"; return 0; }
  local name=$1; shift
  "$@" || { echo "PLAN_FAIL $name"; date; touch "$R/plan.done"; exit 1; }
  echo "STAGE_DONE $name $(date +%T)"
}
finish() { date; echo PLAN_DONE; touch "$R/plan.done"; }
