#!/usr/bin/env bash
# Train with a config of examples/embodiment/config/ (Hydra overrides may follow):
#
#   bash examples/embodiment/run_embodiment.sh behavior_ppo_openvlaoft_embedded            # MuJoCo, any CPU
#   export ISAAC_PATH=/path/to/isaac-sim OMNIGIBSON_DATA_PATH=/path/to/BEHAVIOR-1K-datasets
#   bash examples/embodiment/run_embodiment.sh behavior_ppo_openvlaoft actor.model.model_path=/path/to/ckpt
#
# Logs go to <runner.logger.log_path>/<time>-<config> (default ./logs/...): run_embodiment.log,
# config.yaml, TensorBoard events (tensorboard --logdir ./logs), checkpoints/, video/.
set -euo pipefail

EMBODIED_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_PATH="$(dirname "$(dirname "${EMBODIED_PATH}")")"
CONFIG_NAME="${1:-behavior_ppo_openvlaoft_embedded}"
[ "$#" -gt 0 ] && shift

export PYTHONPATH="${REPO_PATH}${PYTHONPATH:+:${PYTHONPATH}}"

# BEHAVIOR-1K / Isaac Sim (env.train.backend=omnigibson); harmless for the embedded backend.
export OMNIGIBSON_HEADLESS=1 OMNIGIBSON_NO_OMNI_LOGS=1
if [ -n "${OMNIGIBSON_DATA_PATH:-}" ]; then
  export OMNIGIBSON_DATASET_PATH="${OMNIGIBSON_DATASET_PATH:-${OMNIGIBSON_DATA_PATH}/behavior-1k-assets/}"
  export OMNIGIBSON_ASSET_PATH="${OMNIGIBSON_ASSET_PATH:-${OMNIGIBSON_DATA_PATH}/omnigibson-robot-assets/}"
  export OMNIGIBSON_KEY_PATH="${OMNIGIBSON_KEY_PATH:-${OMNIGIBSON_DATA_PATH}/omnigibson.key}"
fi
if [ -n "${ISAAC_PATH:-}" ]; then
  export EXP_PATH="${EXP_PATH:-${ISAAC_PATH}/apps}" CARB_APP_PATH="${CARB_APP_PATH:-${ISAAC_PATH}/kit}"
fi

exec "${PYTHON:-python}" "${EMBODIED_PATH}/train_embodied_agent.py" \
  --config-path "${EMBODIED_PATH}/config" --config-name "${CONFIG_NAME}" "$@"
