#!/usr/bin/env bash
# pytc quickstart on the bundled FlyEM medulla volume (examples/data, CC BY 3.0).
#
# Evaluation region z 175..250 (75 x 250 x 250 voxels at 10 nm). Until pytc-train and
# pytc-infer land, the affinities are a STAND-IN made from the ground truth plus noise
# (examples/stand_in_affinities.py), so this run exercises decoding and evaluation on real
# EM labels, not a trained model.
#
#   bash examples/quickstart.sh [OUT_DIR]      (default runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/quickstart}"
mkdir -p "$out"

uv run python examples/stand_in_affinities.py examples/data/flyem_medulla_250.h5 "$out" \
  | uv run pytc-decode - --output "$out/segmentation" --threshold 0.5 --min-size 50 --overwrite \
  | uv run pytc-eval - --gt "$out/ground_truth" --skeletons kimimaro \
      --save-skeletons "$out/gt_skeletons.json" --errors "$out/errors.csv" --overwrite \
  > "$out/report.json"

echo "report: $out/report.json   errors: $out/errors.csv   segmentation: $out/segmentation" >&2
