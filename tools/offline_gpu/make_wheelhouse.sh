#!/usr/bin/env bash
# Wheels for an offline GPU machine whose image already holds PyTorch, transformers, timm, peft, h5py,
# tensorboard, matplotlib (the usual CUDA images): what behavior-rl needs beyond them, for its Python, into .whl/.
#
#   bash tools/offline_gpu/make_wheelhouse.sh            # Python 3.12, manylinux x86_64
#   PYVER=3.11 bash tools/offline_gpu/make_wheelhouse.sh
#   SLIM_RAY=1 bash tools/offline_gpu/make_wheelhouse.sh # Ray core only (no rllib/tune/serve/data/jars, stripped
#                                                        # binaries) as .whl/ray.tar.xz: 27 MB instead of 79
# There: python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl (session.sh does it).
# Versions are the ones installed here (pip show), so both machines run the same code.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER="${PYVER:-3.12}"
PIP="${PIP:-python3 -m pip}"
mkdir -p .whl
version() { $PIP show "$1" 2>/dev/null | awk '/^Version:/ {print $2}'; }
PLAT="--python-version $PYVER --implementation cp --only-binary=:all: --no-deps"
for n in 17 24 27 28 31 34 35; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
PLAT="$PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
# Not mujoco-studio (9 MB): it holds only the Studio viewer and the Filament renderer (mujoco.studio); the
# env renders through EGL without it (a reset and a step render with `mujoco.studio` blocked, 2026-12-05).
BINARY="gymnasium farama-notifications future mujoco mujoco-core glfw pyopengl stable-baselines3 hydra-core
        omegaconf jsonschema jsonschema-specifications referencing rpds-py"
SOURCE_ONLY="bddl antlr4-python3-runtime"  # sdists on PyPI: built here as pure-Python wheels
for p in $BINARY; do
  v="$(version "$p")"; [ -n "$v" ] || { echo "$p is not installed here: pip install -e '.[all]' first" >&2; exit 1; }
  $PIP download -q $PLAT -d .whl "$p==$v" 2>&1 | grep -v "^WARNING" || true
done
for p in $SOURCE_ONLY; do $PIP wheel -q --no-deps -w .whl "$p==$(version "$p")" 2>&1 | grep -v "^WARNING" || true; done
v="$(version ray)"
if [ "${SLIM_RAY:-0}" = 1 ]; then
  tmp="$(mktemp -d)"
  $PIP download -q $PLAT -d "$tmp" "ray==$v" 2>&1 | grep -v "^WARNING" || true
  $PIP install -q $PLAT --target "$tmp/site" "$tmp"/ray-*.whl 2>&1 | grep -v "^WARNING" || true
  rm -rf "$tmp"/site/ray/{llm,tune,train,serve,data,rllib,jars}; find "$tmp/site" -name '*.pyc' -delete
  find "$tmp/site/ray" -type f \( -name '*.so' -o -path '*/core/src/*' \) -size +1M -exec strip --strip-unneeded {} \;
  (cd "$tmp/site" && tar cf - .) | xz -T2 -6 > .whl/ray.tar.xz
  rm -rf "$tmp"
else
  $PIP download -q $PLAT -d .whl "ray==$v" 2>&1 | grep -v "^WARNING" || true
fi
rm -f .whl/mujoco_studio-*.whl  # from an older wheelhouse
ls .whl; du -sh .whl
bash tools/offline_gpu/travel_size.sh
