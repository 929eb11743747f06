#!/usr/bin/env bash
# pytc quickstart on the bundled FlyEM medulla volume (examples/data, CC BY 3.0).
#
#   bash examples/quickstart.sh [OUT_DIR] [--steps N] [--size S] [--seed N] [--threads N]
#                               [--gpu] [--stand-in]              (default OUT_DIR runs/quickstart)
#
# Regions (z, voxels of 10 nm): training z < 140, validation z 140..175 (checkpoint and decode
# threshold are chosen there), test z 175..250 (scored once, at the chosen threshold).
# The model: pytc-train (a small MedNeXt, deep supervision, `realistic` augmentation, 500
# steps at lr 3e-3) -> OUT_DIR/model.ckpt, then pytc-infer of the validation and test regions;
# a progress line every STEPS/20 steps on stderr (step, loss, validation score, time left).
# Decode thresholds are tuned on the validation region by total VOI (stable on a region this
# small, where NERL hangs on a few long bodies); the test report has both VOI and NERL.
# Baselines, decoded, tuned and scored the same way (pytc_core.baselines):
#   raw_threshold      connected components of raw > t, t chosen on the validation region
#   smoothed_gradient  affinities from the gradient of the Gaussian-smoothed raw, watershed
# Writes OUT_DIR/report.json (pytc-eval's report of the test region + the chosen `threshold`),
# OUT_DIR/baselines/<name>.json, OUT_DIR/slice.png, OUT_DIR/errors.csv and, when the second
# FlyEM volume is there (PYTC_QS_GALA, default ../shared/data/flyem_gala_train_50x100x200.h5),
# OUT_DIR/generalisation/<name>.json: the same checkpoint on a volume it never saw.
# --steps/--size/--seed/--gpu (or PYTC_QS_STEPS, PYTC_QS_SIZE, PYTC_QS_SEED, PYTC_QS_GPU=1)
# set the training run; --threads N (PYTC_QS_THREADS, default 2: the machine the README's
# figures come from) fixes torch's CPU threads, so the figures do not depend on the load.
# --size S, B, M or L trains MedNeXt-S.. instead of the small one (slow on a CPU).
# --stand-in (PYTC_QS_MODEL=stand-in) skips training: affinities made from the ground truth
# plus noise (examples/stand_in_affinities.py), a quick check of decoding and evaluation only.
set -euo pipefail
cd "$(dirname "$0")/.."

out=runs/quickstart
steps="${PYTC_QS_STEPS:-500}"
size="${PYTC_QS_SIZE:-small}"
gpu="${PYTC_QS_GPU:-0}"
seed="${PYTC_QS_SEED:-0}"
threads="${PYTC_QS_THREADS:-2}"
model="${PYTC_QS_MODEL:-train}"  # train | stand-in
gala="${PYTC_QS_GALA:-../shared/data/flyem_gala_train_50x100x200.h5}"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --gpu) gpu=1; shift ;;
    --train) model=train; shift ;;
    --stand-in) model=stand-in; shift ;;
    --seed) seed="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "quickstart.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done

case "$seed$threads" in *[!0-9]*|"") echo "quickstart.sh: error: --seed and --threads take whole numbers (e.g. --seed 1 --threads 2)" >&2; exit 2 ;; esac
[ "$threads" -ge 1 ] || { echo "quickstart.sh: error: --threads must be at least 1" >&2; exit 2; }
# the same thread count for every step (pytc-train also gets --threads): same figures at any load
export OMP_NUM_THREADS="$threads"
data=examples/data/flyem_medulla_250.h5
gt="$data:labels"
val_box=140,0,0,175,250,250
test_box=175,0,0,250,250,250
ws_thresholds=0.1,0.2,0.3,0.4,0.5,0.6,0.7
cc_thresholds="0.4 0.45 0.5 0.55 0.6 0.65"
tools="uv run python examples/quickstart_tools.py"
mkdir -p "$out/baselines"
SECONDS=0
log() { echo "[quickstart ${SECONDS}s] $*" >&2; }

# ---- 1. model affinities of the validation and test regions
if [ "$model" = train ]; then
  # training z < 140, best checkpoint by validation on z 140..175; deep supervision, realistic aug
  if [ "$size" = small ]; then  # a MedNeXt that learns on 2 CPU cores in minutes (~1.4 s/step idle)
    arch=(--arch mednext_custom --set model.mednext_base_channels=16 model.mednext_exp_r=2
          "model.mednext_block_counts=[1,1,1,1,1,1,1,1,1]")
  else
    arch=(--arch mednext --size "$size" --set)
  fi
  accel=cpu; infer_device=cpu
  if [ "$gpu" = 1 ]; then accel=gpu; infer_device=cuda; fi
  log "pytc-train: $steps steps, size $size, seed $seed, $threads thread(s), gpu $gpu"
  # -q: no start-up report, but a progress line every steps/20 steps (pytc-train keeps them)
  ckpt=$(uv run pytc-train --raw "$data:raw" --labels "$gt" --bbox 0,0,0,140,250,250 \
    --val-bbox "$val_box" --patch 32,64,64 --max-steps "$steps" --seed "$seed" --aug realistic \
    --threads "$threads" --run-dir "$out/train" --overwrite -q "${arch[@]}" \
    model.deep_supervision=true optim.lr=3e-3 \
    "train.val_every=$(( steps / 4 > 0 ? steps / 4 : 1 ))" \
    "train.progress_every=$(( steps / 20 > 0 ? steps / 20 : 1 ))" data.val_max_patches=8 \
    "train.accelerator=$accel")
  cp "$ckpt" "$out/model.ckpt"
  log "pytc-infer: validation and test regions"
  model_val=$(uv run pytc-infer -c "$out/model.ckpt" -i "$data:raw" -o "$out/val/affinities" \
    --bbox "$val_box" --device "$infer_device" --overwrite -q)
  model_test=$(uv run pytc-infer -c "$out/model.ckpt" -i "$data:raw" -o "$out/test/affinities" \
    --bbox "$test_box" --device "$infer_device" --overwrite -q)
else
  # STAND-IN (--stand-in): ground truth + noise, a check of decoding and evaluation only
  log "stand-in affinities from the ground truth (not a model: drop --stand-in to train one)"
  uv run python examples/stand_in_affinities.py "$data" "$out/val" --z-start 140 --z-stop 175 \
    2>/dev/null >/dev/null
  uv run python examples/stand_in_affinities.py "$data" "$out/test" --z-start 175 --seed 1 \
    2>/dev/null >/dev/null
  model_val="$out/val/affinities"
  model_test="$out/test/affinities"
fi

# ---- 2. baseline affinities of both regions
$tools baselines "$data:raw" "$out/val" --z 140,175 >/dev/null
$tools baselines "$data:raw" "$out/test" --z 175,250 >/dev/null
log "baseline affinities written"

# score SEGS... on a region: pytc-eval JSON lines; ground-truth skeletons made once per region
score() {  # score REGION BOX [pytc-eval options] < segmentation URIs
  local region=$1 box=$2; shift 2
  local skel="$out/${region}_skeletons.json"
  if [ -f "$skel" ]; then
    uv run pytc-eval - --gt "$gt" --bbox "$box" --skeletons "$skel" --json -q "$@"
  else
    uv run pytc-eval - --gt "$gt" --bbox "$box" --skeletons kimimaro --save-skeletons "$skel" \
      --json -q "$@"
  fi
}

# tune NAME METHOD VAL_AFF TEST_AFF REPORT: score the validation region at every threshold,
# pick the lowest total VOI (NERL of a 35-section region hangs on a few long bodies; VOI
# sums over every voxel), decode and score the test region at it: its report has both.
# ws: one watershed writes the fragments and their merge history (--fragments-only), and
# pytc-eval scores every threshold from them in one pass, no segmentation written (equal to
# scoring each written segmentation); cc: one segmentation per threshold
tune() {
  local name=$1 method=$2 val_aff=$3 test_aff=$4 report=$5 dir="$out/decode/$1" t
  mkdir -p "$dir"
  if [ "$method" = ws ]; then
    uv run pytc-decode "$val_aff" -o "$dir/val_fragments" --method ws \
      --agglomeration-threshold "$ws_thresholds" --min-size 50 --fragments-only --overwrite -q
  else
    for t in $cc_thresholds; do
      uv run pytc-decode "$val_aff" -o "$dir/val_seg_t$t" --threshold "$t" --min-size 50 --overwrite -q
    done
  fi | score val "$val_box" > "$dir/val_reports.jsonl"
  t=$($tools pick --by voi --save "$dir/val_best.json" < "$dir/val_reports.jsonl")
  log "$name: threshold $t chosen on the validation region"
  if [ "$method" = ws ]; then
    uv run pytc-decode "$test_aff" -o "$dir/test_seg" --method ws --agglomeration-threshold "$t" \
      --min-size 50 --overwrite -q
  else
    uv run pytc-decode "$test_aff" -o "$dir/test_seg" --threshold "$t" --min-size 50 --overwrite -q
  fi | score test "$test_box" --overwrite ${6:+--errors "$6" --raw "$data:raw"} > "$dir/test.json"
  $tools report "$dir/test.json" --threshold "$t" > "$report"
}

# ---- 3. tune on validation, score the test region: model, then the baselines
tune model ws "$model_val" "$model_test" "$out/report.json" "$out/errors.csv"
tune raw_threshold cc "$out/val/raw_threshold_aff" "$out/test/raw_threshold_aff" \
  "$out/baselines/raw_threshold.json"
tune smoothed_gradient ws "$out/val/smoothed_gradient_aff" "$out/test/smoothed_gradient_aff" \
  "$out/baselines/smoothed_gradient.json"

# ---- 4. the same checkpoint on another FlyEM volume (labels 0 there are membrane, not scored)
if [ "$model" = train ] && [ -f "$gala" ]; then
  g=$out/generalisation
  mkdir -p "$g"
  t_model=$($tools field "$out/report.json" threshold)
  t_raw=$($tools field "$out/baselines/raw_threshold.json" threshold)
  # the gala file states no voxel size (its source: about 10 nm isotropic, like the training
  # volume); say so to pytc-infer (else it refuses 1 nm against the model's 10 nm) and to
  # pytc-eval (the model's output then says 10 nm, the labels 1 nm)
  uv run pytc-infer -c "$out/model.ckpt" -i "$gala:raw" -o "$g/affinities" \
    --voxel-size 10,10,10 --device "$infer_device" --overwrite -q >/dev/null
  $tools baselines "$gala:raw" "$g" --z 0,50 >/dev/null
  # model and raw threshold at the thresholds chosen on the medulla validation region, and the
  # raw threshold at its best threshold here (an upper bound for it)
  uv run pytc-decode "$g/affinities" -o "$g/model_seg" --method ws --agglomeration-threshold "$t_model" \
    --min-size 50 --overwrite -q | uv run pytc-eval - --gt "$gala:labels" --set "voxel_size=[10,10,10]" --json -q > "$g/model.jsonl"
  $tools report "$g/model.jsonl" --threshold "$t_model" > "$g/model.json"
  for t in $cc_thresholds; do
    uv run pytc-decode "$g/raw_threshold_aff" -o "$g/raw_threshold_t$t" --threshold "$t" \
      --min-size 50 --overwrite -q
  done | uv run pytc-eval - --gt "$gala:labels" --set "voxel_size=[10,10,10]" --json -q > "$g/raw_threshold_all.jsonl"
  $tools pick --threshold "$t_raw" --save "$g/raw_threshold.json" < "$g/raw_threshold_all.jsonl" \
    >/dev/null
  $tools pick --by voi --save "$g/raw_threshold_best.json" < "$g/raw_threshold_all.jsonl" \
    >/dev/null
  log "generalisation on $gala written"
fi

# ---- 5. one section side by side, and the final table
$tools slice "$out/slice.png" --raw "$data:raw" --aff "$model_test" \
  --seg "$out/decode/model/test_seg" --gt "$gt" --report "$out/report.json" \
  --baseline raw_threshold="$out/baselines/raw_threshold.json" \
  --baseline smoothed_gradient="$out/baselines/smoothed_gradient.json" >/dev/null
log "done; test region z 175..250:"
$tools table model="$out/report.json" raw_threshold="$out/baselines/raw_threshold.json" \
  smoothed_gradient="$out/baselines/smoothed_gradient.json" >&2
if [ -f "$out/generalisation/model.json" ]; then
  echo "the same checkpoint on $(basename "$gala") (another FlyEM volume, never seen):" >&2
  $tools table model="$out/generalisation/model.json" \
    raw_threshold="$out/generalisation/raw_threshold.json" \
    raw_threshold_best_here="$out/generalisation/raw_threshold_best.json" >&2
fi
echo "report: $out/report.json  baselines: $out/baselines/  slice: $out/slice.png  errors: $out/errors.csv" >&2
