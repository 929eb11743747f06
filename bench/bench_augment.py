"""Per-patch cost of each augmentation preset, and the ``realistic`` preset's overhead on a CPU
training step at the quickstart's settings.

Run: ``uv run python bench/bench_augment.py [--patches 100] [--steps 2] [--skip-mednext-s]``

Augmentation: every preset of ``pytc_train.augment`` on 32×64×64 patches (1 channel, float32
image in [0, 1], int64 labels) read from the bundled FlyEM medulla volume at random positions,
the read margin included; mixup / copy-paste partners are second patches read the same way.
Each call is timed alone (reads outside the timing); the pipeline is re-seeded per patch
as pytc-train's data module does. Printed: median, mean and 95th percentile per patch (ms);
the mean is what a data loader pays.

Training step (same process, medians of ``--steps`` after one warm-up): forward, masked BCE on
3 affinity channels, backward and an AdamW step at batch 2 (pytc-train's CPU rule at 32×64×64)
for (a) MedNeXt-S, kernel 3 (the default architecture) and (b) a small ``mednext_custom``
(8 base channels, one block per stage: a step ~30× cheaper, so the ratio is a stricter bound).
Overhead = 2 × mean realistic cost per patch / step time, the cost if the augmentation ran
in the training process (data-loader workers run it beside the step instead).

Measured 2026-11-23 on the shared 2-core machine (load average 13-15 from other developers'
jobs, so every time is inflated several-fold, ours and the model's alike; torch 2.15, no GPU),
``--patches 100 --steps 2``, ms per patch:

    preset      margin/side  median ms   mean ms   p95 ms
    light         (0, 0, 0)       0.86      4.69    19.17
    realistic     (1, 6, 6)       1.75      8.53    23.42
    heavy       (2, 25, 25)      70.33     70.25   162.29
    superres      (0, 0, 0)       1.00      4.51    17.43
    instance    (0, 15, 15)      42.59     48.12   110.85
    training step mednext_custom (8 ch, 1 block/stage): 34.9 s; realistic x2 = 17.1 ms = 0.05 %
      (heavy 0.40 %)
    training step MedNeXt-S k3: 237.5 s; realistic x2 = 0.01 % (heavy 0.06 %)

The realistic preset is far under the 20 % target on either model; heavy costs ~8x realistic
(rotation and elastic resampling of 114x114 reads) and is still < 1 %.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from table import emit

from pytc_train.augment import AugConfig, build_augmentation, preset_names

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "flyem_medulla_250.h5"
PATCH = (32, 64, 64)
BATCH = 2


def read_patches(margin, count, seed):
    import h5py

    read = tuple(p + 2 * m for p, m in zip(PATCH, margin, strict=True))
    rng = np.random.default_rng(seed)
    out = []
    with h5py.File(DATA) as f:
        raw, labels = f["raw"], f["labels"]
        for _ in range(count):
            s = [int(rng.integers(0, n - r + 1)) for n, r in zip(raw.shape, read, strict=True)]
            sl = tuple(slice(a, a + r) for a, r in zip(s, read, strict=True))
            out.append((raw[sl][None].astype(np.float32) / 255, labels[sl].astype(np.int64)))
    return out


def bench_preset(name, patches):
    transform, margin = build_augmentation(AugConfig(preset=name), PATCH)
    if transform is None:
        return None
    inputs = read_patches(margin, patches, seed=1)
    partners = read_patches(margin, patches, seed=2) if transform.needs_partner else None
    times = []
    for i, (image, label) in enumerate(inputs):
        d = {"image": image, "label": label, "mask": np.ones(label.shape, np.float32)}
        if partners:
            d["partner_image"], d["partner_label"] = partners[i]
        transform.set_random_state(seed=i)
        t0 = time.perf_counter()
        transform(d)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return margin, float(np.median(ms)), float(ms.mean()), float(np.percentile(ms, 95))


def train_step_seconds(model_config, steps):
    import torch

    from pytc_core.models import build_model

    torch.manual_seed(0)
    model = build_model(model_config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(BATCH, 1, *PATCH)
    target = (torch.rand(BATCH, 3, *PATCH) > 0.5).float()
    mask = torch.ones_like(target)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = (loss_fn(out, target) * mask).sum() / mask.sum()
        loss.backward()
        opt.step()
        if i:  # the first step warms up oneDNN
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--skip-mednext-s", action="store_true",
                        help="only the small mednext_custom step (a MedNeXt-S step takes minutes here)")
    args = parser.parse_args()

    import torch

    print(f"torch threads: {torch.get_num_threads()}; patch {PATCH}, batch {BATCH}")
    print(f"{'preset':<10} {'margin/side':>12} {'median ms':>10} {'mean ms':>9} {'p95 ms':>8}")
    results = {}
    for name in preset_names():
        r = bench_preset(name, args.patches)
        if r is None:
            print(f"{name:<10} {'-':>12} {'0':>10} {'0':>9} {'0':>8}  (disabled)")
            continue
        results[name] = r
        margin, med, mean, p95 = r
        print(f"{name:<10} {str(margin):>12} {med:>10.2f} {mean:>9.2f} {p95:>8.2f}")

    from pytc_core.models import ModelConfig

    models = {"mednext_custom(8 ch, 1 block/stage)": ModelConfig(
        architecture="mednext_custom", mednext_base_channels=8, mednext_block_counts=[1] * 9,
        mednext_exp_r=2)}
    if not args.skip_mednext_s:
        models["MedNeXt-S k3"] = ModelConfig(architecture="mednext", mednext_size="S")
    per_step_aug = BATCH * results["realistic"][2] / 1000
    rows = []
    for label, cfg in models.items():
        step = train_step_seconds(cfg, args.steps)
        print(f"training step {label}: {step * 1000:.0f} ms (median of {args.steps}); realistic "
              f"augmentation of {BATCH} patches: {per_step_aug * 1000:.1f} ms = "
              f"{100 * per_step_aug / step:.2f} % of the step (target <= 20 %)")
        heavy = BATCH * results["heavy"][2] / 1000
        print(f"  heavy: {heavy * 1000:.1f} ms = {100 * heavy / step:.2f} % of the step")
        rows.append((label, step, heavy))
    for label, step, heavy in rows:
        emit("augment", f"realistic preset on a batch of {BATCH} {PATCH} patches vs a CPU "
             f"training step of {label} (heavy preset: {100 * heavy / step:.2f} %)",
             f"{100 * per_step_aug / step:.2f} % (augmentation time / step time; < 20 % wanted)",
             f"training step, {label}")


if __name__ == "__main__":
    main()
