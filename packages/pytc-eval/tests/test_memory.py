"""Peak memory of pytc-eval with skeletons is bounded by the block, not by the volume: the
real command in a subprocess, its own peak resident memory (VmHWM) reported at exit."""

import json
import subprocess
import sys

import numpy as np
import pytest

from pytc_core import create_volume


def cubes(shape, edge, shift, z0=0):
    """uint64 labels: cubes of ``edge`` voxels, each its own id, the grid shifted by ``shift``."""
    z, y, x = np.ogrid[z0:z0 + shape[0], :shape[1], :shape[2]]
    n = 1 + (max(shape) + shift) // edge
    ids = (((z + shift) // edge) * n + (y + shift) // edge) * n + (x + shift) // edge + 1
    return np.broadcast_to(ids, shape).astype(np.uint64)


def write_cubes(uri, edge, shape, shift, slab=64):
    vol = create_volume(str(uri), shape, np.uint64, chunk_size=(64, 64, 64),
                        layer_type="segmentation")
    for z in range(0, shape[0], slab):
        vol.write(cubes((slab, *shape[1:]), edge, shift, z), (z, 0, 0))
    return str(uri)


# the command in a fresh process, which reports its own peak (VmHWM) at exit: ru_maxrss of a
# child would include the peak of this pytest process (Linux keeps it across exec), which on
# CI, after the other slow tests, was 1.2 GB
_PEAK = """
import sys
from pytc_core.cli import run_entry_point
from pytc_core.memory import peak_rss_bytes
from pytc_eval.cli import app
code = run_entry_point("pytc-eval", app, sys.argv[1:])
print(f"peak_rss_bytes {peak_rss_bytes()}", file=sys.stderr)
sys.exit(code)
"""


def max_rss_bytes(argv):
    """Run pytc-eval with ``argv``; (exit code, its peak resident memory in bytes, stderr)."""
    proc = subprocess.run([sys.executable, "-c", _PEAK, *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    peak = int(last.split()[1]) if last.startswith("peak_rss_bytes ") else 0
    return proc.returncode, peak, proc.stderr


def skeleton_file(path, shape, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, shape[0], (n, 3))
    nodes = [{"id": i, "skeleton_id": i // 50, "z": int(p[0]), "y": int(p[1]), "x": int(p[2])}
             for i, p in enumerate(pos)]
    edges = [[i - 1, i] for i in range(1, n) if i % 50]
    path.write_text(json.dumps({"nodes": nodes, "edges": edges}))
    return str(path)


@pytest.mark.slow
def test_peak_rss_with_skeletons_is_bounded_by_the_block_at_512(tmp_path):
    runs = {}
    for edge in (64, 512):
        shape = (edge,) * 3
        seg = write_cubes(tmp_path / f"seg{edge}.zarr", 32, shape, 0)
        gt = write_cubes(tmp_path / f"gt{edge}.zarr", 32, shape, 16)
        skel = skeleton_file(tmp_path / f"skel{edge}.json", shape)
        code, rss, err = max_rss_bytes([seg, "--gt", gt, "--skeletons", skel,
                                        "--block-size", "128", "--json", "-q"])
        assert code == 0, err
        runs[edge] = rss
    seg_bytes = 512 ** 3 * 8  # 1 GiB of uint64
    increment = runs[512] - runs[64]
    print(f"peak RSS: {runs[64] / 2**20:.0f} MiB at 64³, {runs[512] / 2**20:.0f} MiB at 512³: "
          f"+{increment / 2**20:.0f} MiB = {increment / seg_bytes:.1%} of 1 GiB")
    assert increment <= 0.25 * seg_bytes, (
        f"peak RSS {runs[512] / 2**20:.0f} MiB at 512³ vs {runs[64] / 2**20:.0f} MiB at 64³: "
        f"{increment / seg_bytes:.1%} of the segmentation's bytes")


def test_planned_blocks_are_multiples_of_the_chunks(tmp_path):
    """Chunks of 48 (z, y) and 100 (x) voxels: 256³ blocks become 240 x 240 x 200, so no
    chunk straddles two blocks (each is read once); an unchunked axis keeps 256."""
    from pytc_core import open_volume
    from pytc_eval.eval import _planned_block_size

    shape = (300, 300, 300)
    gt = create_volume(str(tmp_path / "gt.zarr"), shape, np.uint32, chunk_size=(48, 48, 100),
                       layer_type="segmentation")
    seg = create_volume(str(tmp_path / "seg.zarr"), shape, np.uint32,
                        chunk_size=(48, 16, 300), layer_type="segmentation")
    del gt, seg
    vols = [open_volume(str(tmp_path / n)) for n in ("gt.zarr", "seg.zarr")]
    assert _planned_block_size(vols[0], vols[1:]) == (240, 240, 200)
