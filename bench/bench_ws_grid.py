"""Blockwise ws on the fragment grid vs the whole volume: equality (VOI 0.0) and time, and
the grid's accuracy against the unbounded whole-volume ws.

1. FlyEM medulla (bench_ws's 64 x 160 x 160 crop, defects + a missing section): VOI against
   the labels of the whole-volume ws without a grid (``fragment_block`` 0, before) and with
   the grid (after), at bench_ws's thresholds.
2. Synthetic defective affinities, 128^3 and 256^3: whole-volume ws on the grid vs blockwise
   ws (blocks of ``--block`` voxels, the same grid): VOI between them and the time ratio
   (medians, interleaved runs in this process).

    uv run python bench/bench_ws_grid.py [--grid 128] [--halo 16] [--block 256] [--sizes 128,256]

The defaults are ws's own (grid 128, halo 16). The unbounded whole volume (no grid) is
timed beside them: the grid's cost.

Measured (2 shared cores, grid 64, halo 8, blocks 128^3): FlyEM best VOI 0.589 without the
grid, 0.646 with it (0.632 with halo 32); 128^3: VOI 0.0 (identical ids), blockwise / whole
1.11x (5.38 / 4.82 s, 3 runs); 256^3: VOI 0.0, 0.99x (97.7 / 98.6 s, 2 runs).

With pieces of one seed joined across cell faces (2026-12-05): FlyEM best VOI with grid 64
0.645 (halo 8); with grid 128, 0.588 (halo 8) and 0.589 (halo 16), as without a grid; 128^3
still VOI 0.0 with identical ids, 1.09x. A prototype that joined the pieces before the
agglomeration (the same joins, other tie-break keys) scored 0.608 at grid 64 and halo 8 and
0.589 at halo 16: these defective affinities are mostly 0 or 1, so many merges tie and the
tie order moves VOI by a few hundredths.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
from table import emit, ratio_x

from pytc_core.synthetic import defective_affinities, synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_decode.ws import affinity_watershed
from pytc_decode.ws_blockwise import (
    DEFAULT_FRAGMENT_BLOCK,
    DEFAULT_HALO,
    affinity_watershed_blockwise,
)
from pytc_eval import rand_voi

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "flyem_medulla_250.h5"
THRESHOLDS = [0.1, 0.3, 0.5, 0.7]


def voi(a: np.ndarray, b: np.ndarray) -> float:
    r = rand_voi(a, b)
    return float(r["voi_split"] + r["voi_merge"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=DEFAULT_FRAGMENT_BLOCK)
    parser.add_argument("--halo", type=int, default=DEFAULT_HALO)
    parser.add_argument("--block", type=int, default=2 * DEFAULT_FRAGMENT_BLOCK)
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with h5py.File(DATA) as f:
        labels = f["labels"][175:239, :160, :160].astype(np.uint32)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=0, missing=(30,))
    before = affinity_watershed(aff, THRESHOLDS, fragment_block=None)
    after = affinity_watershed(aff, THRESHOLDS, fragment_block=args.grid, halo=args.halo)
    assert isinstance(before, list) and isinstance(after, list)
    vb = [voi(labels, s) for s in before]
    va = [voi(labels, s) for s in after]
    print("FlyEM defects, VOI vs labels per threshold " + str(THRESHOLDS))
    print(f"  whole volume, no grid : {' '.join(f'{v:.3f}' for v in vb)}  best {min(vb):.3f}")
    print(f"  whole volume, grid {args.grid} halo {args.halo}: {' '.join(f'{v:.3f}' for v in va)}  "
          f"best {min(va):.3f}")
    emit("decode", f"ws FlyEM defects best VOI, grid {args.grid} vs none",
         f"{min(va):.3f} vs {min(vb):.3f} (lower: better)", "pytc ws without grid")
    for n in (int(s) for s in args.sizes.split(",")):
        lab = synthetic_labels((n, n, n), seed=1)
        a = defective_affinities(affinities_from_labels(lab)[0], seed=0, missing=(n // 3,))
        times: dict[str, list[float]] = {"whole": [], "blockwise": [], "unbounded": []}
        out: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            w = affinity_watershed(a, 0.5, fragment_block=args.grid, halo=args.halo)
            times["whole"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = affinity_watershed_blockwise(a, 0.5, args.block, args.halo,
                                             fragment_block=args.grid)
            times["blockwise"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            affinity_watershed(a, 0.5, fragment_block=None)
            times["unbounded"].append(time.perf_counter() - t0)
            assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
            out = {"whole": w, "blockwise": b}
        d = voi(out["whole"], out["blockwise"])
        r = statistics.median(times["blockwise"]) / statistics.median(times["whole"])
        g = statistics.median(times["whole"]) / statistics.median(times["unbounded"])
        print(f"{n}^3: VOI(blockwise, whole) {d:.4f}, identical ids "
              f"{np.array_equal(out['whole'], out['blockwise'])}, time blockwise/whole {r:.2f}x"
              f" (medians {statistics.median(times['blockwise']):.2f} / "
              f"{statistics.median(times['whole']):.2f} s); whole on the grid / unbounded "
              f"{g:.2f}x ({statistics.median(times['unbounded']):.2f} s)")
        emit("decode", f"ws blockwise {args.block}^3 vs whole, {n}^3, grid {args.grid}",
             ratio_x(r, f"time; < 1.5 target; VOI {d:.4f}"), "pytc ws whole volume")
        emit("decode", f"ws whole volume on grid {args.grid} (halo {args.halo}) vs unbounded, "
             f"{n}^3", ratio_x(g, "time; the grid's cost"), "pytc ws without a grid")


if __name__ == "__main__":
    main()
