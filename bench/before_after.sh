#!/bin/bash
# The proxy benchmark's Flask row at one connection, alternating between two checkouts of
# homerun (each set up with ./scripts/setup test), RUNS times each (default 3): the comparison
# bench/README.md records for the redesign ("Before and after the redesign").
#
#   bench/before_after.sh AFTER_CHECKOUT BEFORE_CHECKOUT [RUNS]
#
# For example: git worktree add ../before fc7467d && (cd ../before && ./scripts/setup test)
# && bench/before_after.sh . ../before
set -euo pipefail
after=$(realpath "$1")
before=$(realpath "$2")
runs=${3:-3}
results=$(realpath "$(dirname "$0")/results")
for run in $(seq 1 "$runs"); do
  for tree in "$after" "$before"; do
    commit=$(git -C "$tree" rev-parse --short=7 HEAD)
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    echo "=== run $run of $runs: $tree ($commit)"
    (cd "$tree" && timeout 900 .venv/bin/python bench/proxy.py --apps flask --connections 1 \
      --rounds 5 --no-telemetry-off \
      --output "$results/proxy-$stamp-$commit-flask-1conn.json")
  done
done
