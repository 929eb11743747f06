"""Summaries of a segmentation: segment count, sizes (voxels) and the ``--dust`` histogram."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DecodeStats", "segment_stats", "size_histogram"]


@dataclass(frozen=True)
class DecodeStats:
    """Summary of a segmentation: segment count, sizes (voxels), labelled voxels."""

    segments: int
    min_size: int
    median_size: float
    max_size: int
    voxels_labelled: int
    voxels_total: int
    #: with ``dust``: (smallest, largest, segments, voxels) per size bin 1, 2-9, 10-99, ...
    histogram: tuple[tuple[int, int, int, int], ...] | None = None

    def line(self) -> str:
        pct = 100.0 * self.voxels_labelled / max(self.voxels_total, 1)
        return (f"{self.segments} segments (sizes min {self.min_size} / "
                f"median {self.median_size:g} / max {self.max_size} voxels), "
                f"{self.voxels_labelled} of {self.voxels_total} voxels labelled ({pct:.1f}%)")

    def histogram_text(self, width: int = 30) -> str:
        """The size histogram as aligned lines: bin, segments, share of labelled voxels, bar."""
        if not self.histogram:
            return "segment sizes: no segments"
        most = max(n for _, _, n, _ in self.histogram) or 1
        lines = ["segment sizes (voxels)   segments   % of labelled voxels"]
        for lo, hi, n, vox in self.histogram:
            name = str(lo) if lo == hi else f"{lo}-{hi}"
            pct = 100.0 * vox / max(self.voxels_labelled, 1)
            bar = "#" * (round(width * n / most) if n else 0)
            lines.append(f"{name:>22}   {n:>8}   {pct:>6.1f}%  {bar}".rstrip())
        return "\n".join(lines)


def size_histogram(sizes: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """(smallest, largest, segments, voxels) per decade of segment size (voxels): 1, 2-9,
    10-99, 100-999, ... up to the bin of the largest segment (empty bins included)."""
    s = np.asarray(sizes, dtype=np.int64)
    if s.size == 0:
        return ()
    edges = [1, 2]
    while edges[-1] <= s.max():
        edges.append(10 if edges[-1] == 2 else edges[-1] * 10)
    out = []
    for lo, nxt in zip(edges[:-1], edges[1:], strict=True):
        sel = (s >= lo) & (s < nxt)
        out.append((lo, nxt - 1, int(sel.sum()), int(s[sel].sum())))
    return tuple(out)


def segment_stats(sizes: np.ndarray, voxels_total: int, dust: bool = False) -> DecodeStats:
    """Stats from voxel counts per id (index 0 = background, not counted)."""
    s = np.asarray(sizes, dtype=np.int64)[1:]
    s = s[s > 0]
    hist = size_histogram(s) if dust else None
    if s.size == 0:
        return DecodeStats(0, 0, 0.0, 0, 0, voxels_total, hist)
    return DecodeStats(int(s.size), int(s.min()), float(np.median(s)), int(s.max()), int(s.sum()),
                       voxels_total, hist)
