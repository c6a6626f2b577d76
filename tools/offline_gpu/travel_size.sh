#!/usr/bin/env bash
# What a device call sends: tracked and untracked-not-ignored files plus the carried .whl/ and .gl/, against
# the device tool's limit of 64 MiB (over it, the call is refused). Exits 1 when over.
#
#   bash tools/offline_gpu/travel_size.sh
cd "$(dirname "$0")/../.."
tree=$({ git ls-files -z; git ls-files -z -o --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
carried=$(du -sb .whl .gl 2>/dev/null | awk '{s += $1} END {print s + 0}')
LIMIT_MIB=64
total=$((tree + carried))
awk -v t="$tree" -v c="$carried" -v l="$LIMIT_MIB" 'BEGIN {m = 1048576
  printf "travels: working tree %.1f MiB + .whl/.gl %.1f MiB = %.1f MiB of %d MiB\n", t / m, c / m, (t + c) / m, l}'
if [ "$total" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "over the device call's $LIMIT_MIB MiB: slim .whl/ (SLIM_RAY=1) or move large records out of the tree" >&2
  exit 1
fi
