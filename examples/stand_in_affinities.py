"""Stand-in affinities for the quickstart, until pytc-train/pytc-infer land.

Reads the ground-truth labels of the evaluation region (z >= 175) of the bundled FlyEM volume
and writes two precomputed layers: ``OUT/ground_truth`` (the labels) and ``OUT/affinities``
(nearest-neighbour affinities of those labels, softened and with Gaussian noise, like an
imperfect model's output). Prints the affinity layer's URI on stdout so it pipes into
``pytc-decode -``.

    uv run python examples/stand_in_affinities.py examples/data/flyem_medulla_250.h5 runs/quickstart
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pytc_core import BBox, create_volume, open_volume
from pytc_core.targets import affinities_from_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("h5", help="HDF5 file with a 'labels' dataset (z, y, x)")
    parser.add_argument("out", help="output directory")
    parser.add_argument("--z-start", type=int, default=175, help="first z slice (default 175)")
    parser.add_argument("--z-stop", type=int, help="z slice after the last (default: the end)")
    parser.add_argument("--noise", type=float, default=0.1, help="Gaussian noise sigma (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels_vol = open_volume(f"{args.h5}:labels")
    stop = labels_vol.bbox.stop
    box = BBox((args.z_start, 0, 0), (args.z_stop or stop[0], stop[1], stop[2]))
    labels = labels_vol.read(box).astype(np.uint32)
    common = dict(voxel_size=labels_vol.voxel_size, offset=box.start, chunk_size=(64, 64, 64),
                  overwrite=True)
    gt = create_volume(f"{args.out}/ground_truth", labels.shape, np.uint32,
                       layer_type="segmentation", **common)
    gt.write(labels, box.start)

    aff, _ = affinities_from_labels(labels)
    rng = np.random.default_rng(args.seed)
    aff = 0.05 + 0.9 * aff + rng.normal(0.0, args.noise, size=aff.shape).astype(np.float32)
    aff = np.clip(aff, 0.0, 1.0).astype(np.float32)
    out = create_volume(f"{args.out}/affinities", aff.shape, np.float32, **common)
    out.write(aff, box.start)
    print(f"{args.out}/affinities", flush=True)
    print(f"stand-in affinities {aff.shape} (noise sigma {args.noise}) and ground truth written "
          f"to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
