#!/usr/bin/env bash
# The quickstart on several training seeds, one after another, and the table of all of them.
#
#   bash examples/quickstart_seeds.sh [OUT_DIR] [--seeds 0,1,2] [quickstart options ...]
#                                                   (default OUT_DIR runs/quickstart_seeds)
#
# Runs `bash examples/quickstart.sh OUT_DIR/seed<N> --seed N ...` for each seed (3 x about
# 15 minutes on an idle 2-core CPU; run it on an otherwise idle machine when the minutes
# matter: the figures do not depend on the load, the minutes do), writes each run's wall
# time to OUT_DIR/seed<N>/seconds.txt, then prints to stdout one markdown row per seed:
# seed, threads, precision, minutes, model and baseline VOI and NERL on the test region, and
# whether the model beats both baselines on VOI and on NERL (examples/quickstart_tools.py
# seeds). Other options (--steps, --threads, --size, --gpu) go to every quickstart run.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/quickstart_seeds
seeds=0,1,2
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    --steps|--size|--threads) pass+=("$1" "$2"); shift 2 ;;
    --gpu) pass+=("$1"); shift ;;
    -*) echo "quickstart_seeds.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
case "$seeds" in ""|*[!0-9,]*) echo "quickstart_seeds.sh: error: --seeds takes whole numbers, e.g. --seeds 0,1,2" >&2; exit 2 ;; esac

runs=()
for seed in ${seeds//,/ }; do
  run="$out/seed$seed"
  mkdir -p "$run"
  start=$SECONDS
  echo "[quickstart_seeds] seed $seed -> $run" >&2
  bash examples/quickstart.sh "$run" --seed "$seed" ${pass[@]+"${pass[@]}"}
  echo $(( SECONDS - start )) > "$run/seconds.txt"
  runs+=("$run")
done
uv run python examples/quickstart_tools.py seeds "${runs[@]}"
