#!/usr/bin/env bash
# Run every benchmark in bench/ with short settings (< 15 min on an idle 2-core machine), keep
# each one's output in bench/results/<date>/<name>.log (+ <name>.meta: command, exit code,
# seconds, date, CPUs and load average at its start), then rewrite the table of bench/README.md between its bench-table markers from
# the BENCH| lines of those logs (bench/table.py). A benchmark that fails gets a
# "failed: see log" row; the script goes on.
#   bash bench/run_all.sh            # all, then the table
#   bash bench/run_all.sh decode ws  # only bench_decode.py and bench_ws.py (the table keeps
#                                    # the other rows of today's bench/results/<date>/)
set -uo pipefail
cd "$(dirname "$0")/.."
today=$(date +%F)
dir="bench/results/$today"
mkdir -p "$dir"
declare -A args=(
  [decode]="--sizes 256 --repeats 3"
  [ws]="--repeats 3"
  [eval]="--quick --skip-e2e"
  [eval_kernels]="--quick"
  [eval_sweep]="--size 128 --repeats 3"
  [infer]="--size 128 --repeats 1 --skip write-behind"
  # write-behind on its own with the tiny model (as in bench_infer.py's docstring): with
  # unet-small its 12 runs alone take ~6 minutes on 2 idle cores
  [infer_wb]="--size 64 --model tiny --patch 32 --skip overhead bf16 memory blocks --wb-repeats 2"
  [train]="all --steps 4 --batches 8"
  [augment]="--patches 50 --steps 1 --skip-mednext-s"
  [grad_checkpointing]="--reps 1 --size 32"
  [ws_reduce]="--sizes 128,256 --block 64"
)
all=(decode ws ws_reduce eval eval_kernels infer infer_wb train augment grad_checkpointing
     eval_sweep)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")
total=$SECONDS
for name in "${names[@]}"; do
  script="bench/bench_${name%_wb}.py"  # infer_wb: a second run of bench_infer.py
  if [ ! -f "$script" ] || [ -z "${args[$name]+x}" ]; then
    echo "skip $name: no $script or no settings for it" >&2
    continue
  fi
  runner="uv run"
  [ "$name" = ws ] && runner="uv run --with waterz==0.10.1"
  command="$runner python $script ${args[$name]}"
  echo "== $name: $command" >&2
  start=$SECONDS
  machine="$(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg) at start"
  # shellcheck disable=SC2086
  $command > "$dir/$name.log" 2>&1
  rc=$?
  seconds=$((SECONDS - start))
  printf 'command=%s\nrc=%s\nseconds=%s\ndate=%s\nmachine=%s\n' "$command" "$rc" "$seconds" \
    "$today" "$machine" > "$dir/$name.meta"
  [ "$rc" -eq 0 ] || echo "   $name failed (exit $rc): see $dir/$name.log" >&2
  echo "   $name: $seconds s" >&2
done
echo "all benchmarks: $((SECONDS - total)) s; results in $dir/" >&2
uv run python bench/table.py "$dir" bench/README.md --names "${all[@]}"
