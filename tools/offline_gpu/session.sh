#!/usr/bin/env bash
# Run a plan of tools/offline_gpu/plans/ on a fresh offline GPU machine in calls of at most WAIT_S seconds:
#
#   PLAN=run16 bash tools/offline_gpu/session.sh 540     # first call: installs .whl/, starts the plan, waits
#   bash tools/offline_gpu/session.sh 540                # later calls: wait, report
#   RESTART=ppo PLAN=run16 bash tools/offline_gpu/session.sh 540   # after PLAN_FAIL: again from that stage
#
# The plan runs detached (setsid) in a copy of the checkout under $R/repo, so a call may end while it goes on;
# each call prints the plan log's tail, the RL step lines and the GPU monitor, and leaves plan.log,
# monitor.log and r.tar.gz (every JSON, log, config and TensorBoard file of $R/learning; no weights, no demos)
# in $OUT. Needs .whl/ from make_wheelhouse.sh (with SLIM_RAY=1 or a ray wheel) and, where the image lacks
# them, the GL/EGL libraries' .deb files in .gl/ (unpacked into /).
WAIT="${1:-540}"; R="${R:-/tmp/w}"; OUT="${OUT:-$PWD/offline_out}"; T0=$(date +%s)
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ ! -f $R/installed ]; then
  if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  [ -f .whl/ray.tar.xz ] && { tar xJf .whl/ray.tar.xz -C /tmp/site || exit 1; }
  mkdir -p $R/repo && { git rev-parse --short HEAD > $R/commit 2>/dev/null || rm -f $R/commit; }
  tar cf - --exclude=./.whl --exclude=./.gl --exclude=./.git --exclude=./.venv . | tar xf - -C $R/repo
  git status --short 2>/dev/null | grep -q . && echo "(with uncommitted changes)" >> $R/commit
  touch $R/installed; echo "installed in $(( $(date +%s) - T0 )) s"
fi
export PYTHONPATH=/tmp/site:$R/repo MUJOCO_GL=egl PATH=/tmp/site/bin:$PATH
[ -f /usr/share/glvnd/egl_vendor.d/10_nvidia.json ] || \
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ ! -f $R/started ] || [ -n "${RESTART:-}" ]; then
  cd $R/repo
  python3 -c "
import mujoco, ray, hydra, stable_baselines3, gymnasium as gym, behavior_gym, torch
env = gym.make('Behavior-R1Pro-v0', task='pick_and_place'); o, _ = env.reset(seed=0)
print('imports and a rendered reset: ok;', {k: getattr(v, 'shape', None) for k, v in o.items()}, torch.cuda.get_device_name())
" > $R/check.log 2>&1; rc=$?; tail -5 $R/check.log; [ $rc = 0 ] || exit 1
  if [ -n "${RESTART:-}" ]; then
    pkill -f tools/offline_gpu/plans; pkill -f run_learning_pipeline; pkill -f examples/embodiment
    ray stop --force >/dev/null 2>&1; rm -f $R/plan.done
  fi
  FROM="${RESTART:-}" R=$R setsid nohup bash "tools/offline_gpu/plans/${PLAN:?PLAN=<a plan in tools/offline_gpu/plans>}.sh" \
    >> $R/plan.log 2>&1 < /dev/null &
  [ -f $R/started ] || setsid nohup bash -c "while true; do echo \"\$(date +%T) \$(nvidia-smi \
    --query-gpu=utilization.gpu,memory.used --format=csv,noheader) load \$(cut -d' ' -f1-3 /proc/loadavg)\"; \
    sleep 20; done" >> $R/monitor.log 2>&1 < /dev/null &
  touch $R/started; cd - >/dev/null
fi
while [ ! -f $R/plan.done ] && [ $(( $(date +%s) - T0 )) -lt "$WAIT" ]; do sleep 5; done
echo "--- plan.log tail"; grep -v "INFO algorithms.distributed.runner: step" $R/plan.log | tail -40
echo "--- steps"; grep -o "step [0-9]*/.*" $R/plan.log | tail -30
echo "--- monitor"; tail -4 $R/monitor.log
cp $R/plan.log $R/monitor.log "$OUT"/ 2>/dev/null
if [ -d $R/learning ]; then
  (cd $R/learning && find . \( -name '*.json' -o -name 'events.out.tfevents*' -o -name '*.log' -o -name '*.yaml' \) \
     -size -20M -not -path './demos/*' | tar czf "$OUT"/r.tar.gz -T -)
fi
ls -la "$OUT"; [ -f $R/plan.done ] && echo PLAN_FINISHED
