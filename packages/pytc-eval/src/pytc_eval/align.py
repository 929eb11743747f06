"""Aligning a segmentation with its ground truth by global coordinates.

Both volumes place their first voxel at a global voxel ``offset`` (z, y, x) and share one
voxel size (nm); they are compared on the intersection of their boxes, optionally cut to a
user box (``--bbox``). Different voxel sizes and boxes that do not overlap are errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.volume import Volume

__all__ = ["check_voxel_sizes", "evaluation_box"]


def check_voxel_sizes(gt: Volume, segmentations: Sequence[Volume],
                      override: Sequence[float] | None = None) -> tuple[float, float, float]:
    """The common voxel size (nm, z y x); UserError when the volumes' sizes differ.

    ``override`` (the config's ``voxel_size``) declares the voxel size of every volume (for
    files without metadata) and skips the check.
    """
    if override is not None:
        return tuple(float(v) for v in override)  # type: ignore[return-value]
    size = tuple(float(v) for v in gt.voxel_size)
    for seg in segmentations:
        if not np.allclose(seg.voxel_size, size, rtol=1e-6, atol=0):
            raise UserError(
                f"segmentation {seg.uri} has voxel size {_nm(seg.voxel_size)} but ground truth "
                f"{gt.uri} has {_nm(size)}",
                "evaluate volumes of one voxel size (resample one of them); if a file's "
                "metadata is wrong, declare the size with --set voxel_size=[z, y, x]")
    return size  # type: ignore[return-value]


def _nm(size: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in size) + ") nm"


def evaluation_box(seg: Volume, gt: Volume, bbox: BBox | None = None) -> BBox:
    """The box (global voxels) where ``seg`` is scored: both volumes' boxes intersected,
    and cut to ``bbox`` when given. UserError when that is empty."""
    box = gt.bbox.intersect(seg.bbox)
    if box.empty:
        raise UserError(f"segmentation {seg.uri} covers {seg.bbox} and ground truth {gt.uri} "
                        f"covers {gt.bbox} (global voxels, z y x): they do not overlap",
                        "check the volumes' offsets, or evaluate a segmentation of the ground "
                        "truth's region")
    if bbox is not None:
        cut = box.intersect(bbox)
        if cut.empty:
            raise UserError(f"--bbox {bbox} does not overlap the region {box} that "
                            f"{seg.uri} and {gt.uri} share (global voxels, z y x)",
                            "give a box inside both volumes")
        box = cut
    return box
