"""Ablation of the BANIS+ recipe options on the bundled FlyEM split (issue 27 §2).

Each variant trains the quickstart's model (small MedNeXt, deep supervision, `realistic`
augmentation, lr 3e-3, 32x64x64 patches, training z < 140) for the same number of steps and
seeds, then is scored like the quickstart: validation boundary F1 (z 140..175, at the end of
training), affinities of the validation and test regions, watershed decoding at the
agglomeration threshold chosen on validation (best NERL, then VOI), test VOI and NERL
(z 175..250). Every variant is the baseline (today's defaults) with one option on, plus all
of them together:

    baseline      pooled BCE + Dice, no EMA, no erosion, no LSDs
    ema           optim.ema (decay --ema-decay; "auto": max(0.9, 1 - 10 / steps))
    per_channel   loss.reduction = "per_channel"
    erode         data.erode = --erode (3D)
    lsd           loss.lsd_weight = 1, loss.lsd_sigma = --lsd-sigma (10 more channels)
    all           all four

Training runs in this process with no loader workers, so ``time.process_time()`` (all threads)
from its first to its last step is its CPU time, LSD targets and the validation included
(set-up, the same for every variant, is not); "per CPU-minute" columns divide the gain over the
baseline of the same seed by the variant's training CPU minutes. Prints a table (medians over
the seeds, and each seed) and BENCH lines.

    uv run python bench/bench_recipe.py --steps 500 --seeds 0,1,2          # the issue's budget
    uv run python bench/bench_recipe.py --steps 30 --seeds 0 --variants baseline,all
    uv run python bench/bench_recipe.py --lsd-speed 20    # LSD targets: ours vs lsd-lite

Preliminary, 2026-12-04, the shared 2-core machine (load 1-4 from other jobs, so CPU times
are noisy by +-30 %), one seed, far below the quickstart's 500 steps (untrained models; the
full 6 variants x 3 seeds x 500 steps did not fit the time):

    --steps 20 --seeds 0 --no-test       train CPU-min   val boundary F1
      baseline                                0.78          0.0085
      ema (decay 0.9)                         0.75          0.0199
      per_channel                             0.70          0.0084
      erode 1                                 0.75          0.1636
      lsd (sigma 3)                           1.41          0.0000
      all                                     2.03          0.1832
    --steps 60 --seeds 0 --variants baseline,erode,all
                  train CPU-min  val boundary F1  test VOI (split+merge)  test NERL  threshold
      baseline        3.06           0.1356          5.627 (5.107+0.520)     0.0200      0.1
      erode           2.18           0.1894          2.534 (1.855+0.679)     0.0103      0.6
      all             2.99           0.1914          2.571 (1.918+0.654)     0.0104      0.6
    --lsd-speed 10 --lsd-sigma 3: 257 ms (ours) vs 506 ms (lsd-lite) per patch, equal values

2026-12-04, a lent H200 (``bash bench/device/recipe_gpu.sh OUT --steps 500 --seeds 0,1,2
--variants baseline,erode,all --jobs 9 --threads 1``: bf16-mixed, 9 runs side by side; the
``all`` runs, slowed by LSD targets on the CPU, did not finish in the device time):

    --steps 500      val boundary F1   test VOI (split+merge)   test NERL   threshold
      baseline s0        0.4387         2.105 (1.258+0.848)      0.0152        0.3
      baseline s1        0.4262         2.808 (2.325+0.483)      0.0207        0.2
      baseline s2        0.4382         2.286 (1.578+0.708)      0.0158        0.3
      erode 1  s0        0.2577         2.282 (1.338+0.944)      0.0148        0.6
      erode 1  s1        0.2471         2.325 (1.353+0.972)      0.0144        0.6
      erode 1  s2        0.2568         2.642 (1.909+0.733)      0.0180        0.5

(a variant's val boundary F1 is scored against its own targets, so erosion's is not
comparable with the baseline's). Medians VOI 2.286 vs 2.325, NERL 0.0158 vs 0.0148: the
60-step gain of erosion is gone at the quickstart's 500 steps.

2026-12-04, this 2-core CPU (no GPU lent; ``--steps 500 --seeds 0,1,2 --variants
ema,per_channel --threads 1``, one run at a time; ``ema_raw`` = the ema run's raw weights,
the baseline's own):

    --steps 500      train CPU-min   test VOI (split+merge)   test NERL   threshold
      ema_raw  s0        11.87        2.307 (1.352+0.955)      0.0145        0.3
      ema_raw  s1        11.97        2.814 (2.358+0.456)      0.0209        0.2
      ema_raw  s2        12.08        2.288 (1.624+0.664)      0.0228        0.3
      ema 0.98 s0        11.87        2.203 (1.347+0.856)      0.0178        0.3
      ema 0.98 s1        11.97        2.016 (0.833+1.183)      0.0158        0.4
      ema 0.98 s2        12.08        2.284 (1.589+0.694)      0.0250        0.3
      per_ch   s0        11.97        2.301 (1.438+0.863)      0.0122        0.3
      per_ch   s1        12.16        2.294 (1.503+0.791)      0.0149        0.3
      per_ch   s2        11.86        4.724 (4.411+0.313)      0.0204        0.1

EMA: VOI better on 3 of 3 seeds, NERL on 2 of 3; per-channel BCE: no gain with 3
nearest-neighbour offsets.
2026-12-05, the same CPU, ``--steps 500 --seeds 0,1,2 --variants lsd --threads 1`` (a
benchmark or the tests on the other core part of the time):
    --steps 500      train CPU-min   test VOI (split+merge)   test NERL   threshold
      lsd      s0        16.02        2.236 (1.321+0.915)      0.0254        0.3
      lsd      s1        15.82        2.276 (1.379+0.897)      0.0263        0.3
      lsd      s2        15.66        2.158 (1.448+0.709)      0.0217        0.3
LSDs: VOI better than ema_raw (the baseline) on 3 of 3 seeds, NERL on 2 of 3, at 1.32× the
training CPU. The quickstart itself (2 threads, best checkpoint by validation
F1, VOI tuning) with EMA 0.98 scored worse on all three seeds (test VOI 2.403 / 2.327 / 2.708
against 2.316 / 2.250 / 2.580), so its defaults do not include EMA.

``--lsd-speed N``: instead, the cost of the LSD target of N training patches (32x64x64 of the
FlyEM training region, sigma ``--lsd-sigma``): ``pytc_train.lsd.lsd_from_labels`` against
``lsd_lite.get_lsds`` in this process, interleaved, medians, and the largest difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "flyem_medulla_250.h5"
TRAIN_BOX = [0, 0, 0, 140, 250, 250]
VAL_Z, TEST_Z = (140, 175), (175, 250)
THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
VARIANTS = ("baseline", "ema", "per_channel", "erode", "lsd", "all")


def variant_overrides(name: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config tables a variant changes from the baseline."""
    decay = args.ema_decay if args.ema_decay != "auto" else max(0.9, 1 - 10 / args.steps)
    parts = {"ema": {"optim": {"ema": float(decay)}},
             "per_channel": {"loss": {"reduction": "per_channel"}},
             "erode": {"data": {"erode": args.erode}},
             "lsd": {"loss": {"lsd_weight": 1.0, "lsd_sigma": [args.lsd_sigma]},
                     "model": {"out_channels": 13}}}
    chosen = list(parts) if name == "all" else [] if name == "baseline" else [name]
    out: dict[str, dict[str, Any]] = {}
    for part in chosen:
        for table, values in parts[part].items():
            out.setdefault(table, {}).update(values)
    return out


def _loop_timer():
    import pytorch_lightning as pl

    class LoopTimer(pl.Callback):
        """CPU seconds (all threads of this process) from the first to the last step."""

        def on_train_start(self, trainer, pl_module) -> None:
            self.start = time.process_time()

        def on_train_end(self, trainer, pl_module) -> None:
            self.cpu = time.process_time() - self.start

    return LoopTimer()


def train_variant(name: str, seed: int, args: argparse.Namespace, run_dir: Path):
    from pytc_core.config import resolve_config
    from pytc_train.config import TrainConfig
    from pytc_train.train import run_train

    overrides: dict[str, dict[str, Any]] = {
        "model": {"architecture": "mednext_custom", "mednext_base_channels": 16,
                  "mednext_exp_r": 2, "mednext_block_counts": [1] * 9,
                  "deep_supervision": True},
        "data": {"raw": f"{DATA}:raw", "labels": f"{DATA}:labels", "bbox": TRAIN_BOX,
                 "val_bbox": [VAL_Z[0], 0, 0, VAL_Z[1], 250, 250], "patch_size": [32, 64, 64],
                 "val_max_patches": 8, "num_workers": 0, "batch_size": args.batch_size},
        "optim": {"lr": 3e-3},
        "aug": {"preset": "realistic"},
        "train": {"max_steps": args.steps, "val_every": args.steps, "seed": seed,
                  "run_dir": str(run_dir), "accelerator": args.accelerator,
                  "threads": args.threads,
                  "checkpoint_every": args.steps, "log_every": max(1, args.steps // 5)}}
    for table, values in variant_overrides(name, args).items():
        overrides.setdefault(table, {}).update(values)
    config = resolve_config(TrainConfig, None, overrides=overrides)
    timer = _loop_timer()
    t0 = time.perf_counter()
    result = run_train(config, overwrite=True, progress_bar=False, callbacks=[timer])
    return result, timer.cpu, time.perf_counter() - t0


def predict_region(ckpt: Path, raw: np.ndarray, z: tuple[int, int],
                   device: str | None = None, weights: str = "auto") -> np.ndarray:
    """Affinities of raw[z0:z1] (``weights``: auto = EMA weights where the checkpoint has
    them), with up to 16 slices of context on each side, as pytc-infer's --bbox."""
    from pytc_core.models import load_model_from_checkpoint
    from pytc_infer import predict

    model, _ = load_model_from_checkpoint(ckpt, weights=weights)
    lo, hi = max(0, z[0] - 16), min(raw.shape[0], z[1] + 16)
    aff = predict(model, raw[lo:hi], (32, 64, 64), device=device)
    return aff[:3, z[0] - lo: z[0] - lo + z[1] - z[0]]


def score(seg: np.ndarray, gt: np.ndarray, skeletons, voxel_size, tmp: Path) -> dict[str, float]:
    from pytc_core.volume import open_volume
    from pytc_eval import evaluate_volumes

    np.save(tmp / "seg.npy", seg.astype(np.uint32))
    np.save(tmp / "gt.npy", gt)
    ev = evaluate_volumes(open_volume(str(tmp / "seg.npy")), open_volume(str(tmp / "gt.npy")),
                          skeletons, voxel_size=voxel_size)
    r = ev.report
    s = r.skeleton_scores
    return {"voi": r.voi_split + r.voi_merge, "voi_split": r.voi_split,
            "voi_merge": r.voi_merge, "nerl": s.nerl if s is not None else float("nan")}


def evaluate(ckpt: Path, raw: np.ndarray, gt: dict[str, np.ndarray], skeletons: dict,
             voxel_size, tmp: Path, device: str | None = None,
             weights: str = "auto") -> dict[str, float]:
    """Test VOI / NERL at the watershed threshold chosen on validation (NERL, then VOI)."""
    from pytc_decode import affinity_watershed

    val_aff = predict_region(ckpt, raw, VAL_Z, device, weights)
    segs = affinity_watershed(val_aff, THRESHOLDS, min_size=50)
    assert isinstance(segs, list)
    scored = [(t, score(s, gt["val"], skeletons["val"], voxel_size, tmp))
              for t, s in zip(THRESHOLDS, segs, strict=True)]
    best_t, _ = min(scored, key=lambda ts: (-np.nan_to_num(ts[1]["nerl"], nan=-1),
                                            ts[1]["voi"]))
    test_aff = predict_region(ckpt, raw, TEST_Z, device, weights)
    seg = affinity_watershed(test_aff, best_t, min_size=50)
    assert isinstance(seg, np.ndarray)
    return {"threshold": best_t, **score(seg, gt["test"], skeletons["test"], voxel_size, tmp)}


def run_one(name: str, seed: int, args: argparse.Namespace, base: Path,
            data: tuple) -> dict[tuple[str, int], dict[str, float]]:
    """Train one variant with one seed, then score it; its table rows (also printed). An
    ``ema`` run is scored twice: with its EMA weights (row ``ema``) and with its raw weights
    (row ``ema_raw``). EMA only reads the weights, so the raw weights are the baseline's of
    the same seed (the same steps, the same random draws): a paired baseline at no training
    cost, used where no ``baseline`` run was asked for."""
    raw, gt, skeletons, voxel_size = data
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    run_dir = base / f"{name}_s{seed}"
    result, cpu, wall = train_variant(name, seed, args, run_dir)
    row = {"cpu_min": cpu / 60, "wall_min": wall / 60,
           "val_boundary_f1": (result.val_scores or {}).get("boundary_f1", float("nan"))}
    if not args.no_test:
        tmp = run_dir / "eval"
        tmp.mkdir(exist_ok=True)
        device = "cuda" if args.accelerator in ("cuda", "gpu") else None
        scored = evaluate(result.best_checkpoint, raw, gt, skeletons, voxel_size, tmp, device)
        if name == "ema":
            raw_row = {**row, "val_boundary_f1": float("nan"),
                       **evaluate(result.best_checkpoint, raw, gt, skeletons, voxel_size, tmp,
                                  device, weights="raw")}
        row.update(scored)
    rows = {(name, seed): row}
    if name == "ema" and not args.no_test:
        rows[("ema_raw", seed)] = raw_row
    for (n, s), r in rows.items():
        print(f"{n} seed {s}: " + json.dumps({k: round(v, 4) for k, v in r.items()}),
              file=sys.stderr, flush=True)
    return rows


def lsd_speed(patches: int, sigma: float) -> None:
    import h5py
    from lsd_lite import __version__ as lsd_lite_version
    from lsd_lite import get_lsds

    from pytc_train.lsd import lsd_from_labels

    rng = np.random.default_rng(0)
    with h5py.File(DATA, "r") as f:
        labels = f["labels"][:TRAIN_BOX[3]]
    ours, theirs, worst = [], [], 0.0
    for _ in range(patches):
        z, y, x = (int(rng.integers(0, n - p + 1)) for n, p in zip(labels.shape, (32, 64, 64),
                                                                    strict=True))
        patch = labels[z:z + 32, y:y + 64, x:x + 64].astype(np.int64)
        t = time.perf_counter()
        a = lsd_from_labels(patch, sigma)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = get_lsds(patch, sigma)
        theirs.append(time.perf_counter() - t)
        worst = max(worst, float(np.abs(a - b).max()))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"LSD targets of {patches} FlyEM patches 32x64x64, sigma {sigma}: pytc {mo * 1e3:.0f} ms,"
          f" lsd-lite {mt * 1e3:.0f} ms per patch (medians); largest difference {worst:.2e}")
    print(f"BENCH|train|LSD target per 32x64x64 FlyEM patch, sigma {sigma}: lsd_from_labels vs "
          f"lsd_lite.get_lsds|{mt / mo:.2f}x (> 1: pytc faster)|lsd-lite {lsd_lite_version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps per run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--ema-decay", default="auto")
    parser.add_argument("--erode", type=int, default=1)
    parser.add_argument("--lsd-sigma", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixed)")
    parser.add_argument("--accelerator", default="cpu",
                        help="cpu (the quickstart's budget, CPU minutes measured) or gpu")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs side by side, each in its own process (CPU minutes then "
                             "include the others' contention; use with --accelerator gpu)")
    parser.add_argument("--no-test", action="store_true",
                        help="validation boundary F1 only (no decoding / VOI / NERL)")
    parser.add_argument("--out", default=None, help="run directories (default: a temp dir)")
    parser.add_argument("--lsd-speed", type=int, default=0, metavar="N",
                        help="only time the LSD targets of N patches, ours vs lsd-lite")
    args = parser.parse_args()
    if args.lsd_speed:
        lsd_speed(args.lsd_speed, args.lsd_sigma)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import h5py

    from pytc_eval import skeletons_from_labels

    with h5py.File(DATA, "r") as f:
        raw = f["raw"][:]
        labels = f["labels"][:]
        voxel_size = tuple(float(v) for v in f["labels"].attrs.get("resolution_nm",
                                                                     (10, 10, 10)))
    gt = {"val": labels[VAL_Z[0]:VAL_Z[1]], "test": labels[TEST_Z[0]:TEST_Z[1]]}
    skeletons = {}
    if not args.no_test:
        t0 = time.perf_counter()
        skeletons = {k: skeletons_from_labels(v, voxel_size) for k, v in gt.items()}
        print(f"skeletons of the validation and test regions: {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)

    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_recipe_"))
    rows: dict[tuple[str, int], dict[str, float]] = {}
    runs = [(name, seed) for seed in seeds for name in variants]
    data = (raw, gt, skeletons, voxel_size)
    if args.jobs > 1:  # runs side by side (e.g. on one GPU), each in its own process
        import concurrent.futures
        import multiprocessing

        with concurrent.futures.ProcessPoolExecutor(
                args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, name, seed, args, base, data): (name, seed)
                       for name, seed in runs}
            for future in concurrent.futures.as_completed(futures):
                rows.update(future.result())
    else:
        for name, seed in runs:
            rows.update(run_one(name, seed, args, base, data))
    if "ema" in variants and not args.no_test:
        variants.insert(variants.index("ema"), "ema_raw")
    rows = {(name, seed): rows[(name, seed)] for seed in seeds for name in variants}
    base_name = "baseline" if "baseline" in variants else "ema_raw"

    metrics = ["val_boundary_f1"] + ([] if args.no_test else ["voi", "nerl"])
    print(f"\n{args.steps} steps, seeds {seeds}, batch {args.batch_size}, {args.threads} threads"
          f"; medians over seeds; d/CPU-min: gain over the {base_name} row of the same seed per "
          f"training CPU minute (VOI: decrease)")
    header = ["variant", "train CPU-min"] + metrics + [f"d {m}/CPU-min" for m in metrics]
    print(" | ".join(header))
    for name in variants:
        per_seed = [rows[(name, s)] for s in seeds]
        cells = [name, f"{statistics.median(r['cpu_min'] for r in per_seed):.2f}"]
        cells += [f"{statistics.median(r[m] for r in per_seed):.4f}" for m in metrics]
        for m in metrics:
            if (base_name, seeds[0]) not in rows:
                cells.append("-")
                continue
            sign = -1.0 if m == "voi" else 1.0
            gains = [sign * (rows[(name, s)][m] - rows[(base_name, s)][m]) / rows[(name, s)]["cpu_min"]
                     for s in seeds]
            cells.append(f"{statistics.median(gains):+.4f}")
        print(" | ".join(cells))
    print("\nper seed:")
    for (name, seed), row in rows.items():
        print(f"  {name:12s} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    for name in variants:
        if name in ("baseline", "ema_raw") or ("baseline", seeds[0]) not in rows:
            continue
        f1 = statistics.median(rows[(name, s)]["val_boundary_f1"] - rows[("baseline", s)]
                               ["val_boundary_f1"] for s in seeds)
        print(f"BENCH|train|recipe {name} vs baseline, {args.steps} steps, seeds {args.seeds}: "
              f"validation boundary F1 difference|{f1:+.4f} (> 0: {name} better)|pytc baseline")


if __name__ == "__main__":
    main()
