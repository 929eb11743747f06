"""pytc-decode --method ws: ten agglomeration thresholds against one, and re-thresholding a
stored fragments output against a full decode (fragments once, every threshold from them).

    uv run python bench/bench_ws_thresholds.py [--repeats 3]

Same defective FlyEM affinities as bench_ws.py (64 x 160 x 160). Timed in one process,
interleaved, medians: the library pipeline (``affinity_watershed``: one watershed and one
agglomeration, then one relabel per threshold), the whole command path (``run_decode``,
writing every segmentation to a local zarr array), the same blockwise (64 x 128 x 128
blocks: multiples of the default fragment grid, 128, and all of z; a local precomputed output: ten thresholds write ten segmentations from one blockwise watershed and
agglomeration; ``--fragments-only`` writes the fragments and merge history), and
``run_decode`` on a ``--fragments-only`` output (relabel only, no watershed) against a full
one-threshold decode.
Also the relabel itself: our one-pass Numba relabel (table lookup + first-voxel numbering)
against fastremap (``remap`` + ``renumber``) on the same fragments and table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
from table import emit, peer, ratio_x

from pytc_core.merge_history import read_merge_history
from pytc_core.synthetic import defective_affinities
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume
from pytc_decode import affinity_watershed
from pytc_decode.agglomeration import relabel_by_first_voxel
from pytc_decode.config import DecodeConfig
from pytc_decode.stage import run_decode

DATA = Path(__file__).resolve().parents[1] / "examples" / "data" / "flyem_medulla_250.h5"
TEN = [round(0.1 * i, 1) for i in range(1, 10)] + [0.95]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with h5py.File(DATA) as f:
        labels = f["labels"][175:239, :160, :160].astype(np.uint32)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=0, missing=(30,))
    tmp = Path(tempfile.mkdtemp(prefix="bench_ws_thresholds_"))
    aff_uri = str(tmp / "aff.zarr")
    vol = create_volume(aff_uri, aff.shape, aff.dtype, chunk_size=(32, 64, 64))
    vol.write(aff)
    one, ten = DecodeConfig(method="ws", agglomeration_threshold=(0.5,)), \
        DecodeConfig(method="ws", agglomeration_threshold=tuple(TEN))
    frag_uri = run_decode(aff_uri, ten, output=str(tmp / "frag.zarr"), fragments="only",
                          show_progress=False).output
    history = read_merge_history(frag_uri)
    assert history is not None
    runs = {
        "library 1": lambda: affinity_watershed(aff, [0.5]),
        "library 10": lambda: affinity_watershed(aff, TEN),
        "command 1": lambda: run_decode(aff_uri, one, output=str(tmp / "s1.zarr"),
                                        overwrite=True, show_progress=False),
        "command 10": lambda: run_decode(aff_uri, ten, output=str(tmp / "s10.zarr"),
                                         overwrite=True, show_progress=False),
        "from fragments 1": lambda: run_decode(frag_uri, one, output=str(tmp / "r1.zarr"),
                                               overwrite=True, show_progress=False),
        "blockwise 1": lambda: run_decode(aff_uri, replace(one, block_size=(64, 128, 128)),
                                          output=str(tmp / "b1"), overwrite=True,
                                          show_progress=False),
        "blockwise 10": lambda: run_decode(aff_uri, replace(ten, block_size=(64, 128, 128)),
                                           output=str(tmp / "b10"), overwrite=True,
                                           show_progress=False),
        "blockwise fragments 10": lambda: run_decode(
            aff_uri, replace(ten, block_size=(64, 128, 128)), output=str(tmp / "bf10"),
            fragments="only", overwrite=True, show_progress=False),
    }
    for fn in runs.values():
        fn()  # warm-up (numba compiles, cached after the first run)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in med.items():
        print(f"{name:<18} {t:.2f} s")

    # the relabel: ours vs fastremap on the same fragments and table
    import fastremap

    from pytc_core.volume import open_volume

    frag = open_volume(frag_uri).read()
    table = history.segment_table(0.5)
    relabel_by_first_voxel(frag, table)
    ours_t, fr_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = relabel_by_first_voxel(frag, table)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs = fastremap.renumber(table.astype(np.uint32)[frag], preserve_zero=True,
                                    in_place=True)[0]
        fr_t.append(time.perf_counter() - t0)
        assert np.array_equal(ours, theirs)
    print(f"relabel: ours {statistics.median(ours_t) * 1e3:.1f} ms, fastremap "
          f"{statistics.median(fr_t) * 1e3:.1f} ms")
    emit("decode ws", f"ten agglomeration thresholds vs one, library pipeline, {labels.shape}",
         ratio_x(med["library 10"] / med["library 1"], "time ratio, target <= 1.3"), "none")
    emit("decode ws", "ten thresholds vs one, pytc-decode run (each segmentation written)",
         ratio_x(med["command 10"] / med["command 1"], "time ratio, target <= 1.3"), "none")
    emit("decode ws", "ten thresholds vs one, blockwise pytc-decode (64 x 128 x 128 blocks, "
         "each segmentation written)", ratio_x(med["blockwise 10"] / med["blockwise 1"],
                                          "time ratio, target <= 1.3"), "none")
    emit("decode ws", "ten thresholds vs one, blockwise --fragments-only vs a one-threshold "
         "blockwise decode", ratio_x(med["blockwise fragments 10"] / med["blockwise 1"],
                                     "time ratio, target <= 1.3"), "none")
    emit("decode ws", "re-thresholding a --fragments-only output vs a full one-threshold decode",
         ratio_x(med["command 1"] / med["from fragments 1"], "> 1: re-thresholding faster"),
         "none")
    emit("decode ws", "relabel fragments at a threshold: Numba one pass vs fastremap "
         "(table[frag] + renumber)", ratio_x(statistics.median(fr_t)
                                             / statistics.median(ours_t), "> 1: pytc faster"),
         peer("fastremap"))


if __name__ == "__main__":
    main()
