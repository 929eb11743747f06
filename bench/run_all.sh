#!/usr/bin/env bash
# Run every benchmark in bench/ with short settings (< 15 min on an idle 2-core machine) and
# keep each one's output in bench/results/<date>/<name>.log; prints the ratio lines at the end.
# Copy them into bench/README.md's table (with the date) after a run on an idle machine.
#   bash bench/run_all.sh            # all
#   bash bench/run_all.sh decode ws  # only bench_decode.py and bench_ws.py
set -uo pipefail
cd "$(dirname "$0")/.."
dir="bench/results/$(date +%F)"
mkdir -p "$dir"
declare -A args=(
  [decode]="--sizes 256 --repeats 3"
  [ws]="--repeats 3"
  [eval]="--quick --skip-e2e"
  [eval_kernels]="--quick"
  [infer]="--size 128 --repeats 1"
  [augment]="--patches 50 --steps 1 --skip-mednext-s"
  [grad_checkpointing]="--reps 1 --size 32"
  [train]="all --steps 4 --batches 8"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(decode ws eval eval_kernels infer train augment grad_checkpointing)
for name in "${names[@]}"; do
  script="bench/bench_$name.py"
  if [ ! -f "$script" ]; then echo "skip $name: $script not in this tree" >&2; continue; fi
  runner=(uv run)
  [ "$name" = ws ] && runner=(uv run --with waterz==0.10.1)
  echo "== $name: ${runner[*]} python $script ${args[$name]}" >&2
  start=$SECONDS
  # shellcheck disable=SC2086
  "${runner[@]}" python "$script" ${args[$name]} > "$dir/$name.log" 2>&1 \
    || echo "   $name failed (exit $?): see $dir/$name.log" >&2
  echo "   $((SECONDS - start)) s" >&2
done
echo "ratio lines (full output in $dir/):"
grep -H -i -E "ratio|speed|×|[0-9]x |overhead" "$dir"/*.log || true
