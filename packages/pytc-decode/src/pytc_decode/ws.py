"""Seeded watershed fragments plus mean-affinity agglomeration (``pytc-decode --method ws``).

For predictions that are not perfect: one leaking edge merges two neurons under connected
components, while here a leak has to outweigh the whole shared boundary of two fragments.
The shape is that of waterz / lsd (funkelab) and PyTC's waterz decoder:

1. **seeds**: the maxima of a distance transform of the voxels none of whose nearest-neighbour
   edges is below ``seed_threshold`` (one seed per connected plateau of maxima), in 3D or
   per z-section (``seeds_2d`` for anisotropic data);
2. **fragments**: a seeded watershed on the affinity graph: each voxel joins the seed it is
   linked to through the highest-affinity path (a bucket queue of 256 levels of ``1 -
   affinity``, FIFO within a level, so the result is deterministic);
3. **region graph**: one edge per pair of touching fragments with the sum and count of the
   affinities on their shared boundary (and their quantile, for ``merge_function =
   "quantile"`` scoring of the initial edges);
4. **agglomeration**: the pair with the lowest score ``1 - mean affinity`` is merged, scores of
   the merged region's edges are the means over their combined boundary (so scores never
   decrease), until the lowest score reaches the agglomeration threshold. One pass gives the
   segmentation of every threshold of a list: a threshold keeps the merges scored below it.

Thresholds use waterz's convention: ``agglomeration_threshold`` t merges while
``1 - affinity < t``, so
a higher threshold merges more (fewer splits, more merges). Arrays are channels first
(C, Z, Y, X), channels 0-2 the z, y, x nearest-neighbour affinities (channel c at voxel v links
v and v - e_c); sizes and distances in voxels unless ``voxel_size`` (nm, z, y, x) is given.

Steps 1-2 are :mod:`pytc_decode.fragments`, steps 3-4 :mod:`pytc_decode.agglomeration`; this
module puts them together (:func:`affinity_watershed`) and re-exports their names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytc_core.errors import UserError
from pytc_decode.agglomeration import (
    RegionGraph,
    agglomerate,
    boundary_edges,
    group_pairs,
    merge_roots,
    number_by_first_voxel,
    region_graph,
    segmentations_at,
    sum_groups,
)
from pytc_decode.fragments import (
    LEVELS,
    flood,
    fragment_seeds,
    nearest_neighbour_float,
    watershed_fragments,
)
from pytc_decode.ws_blockwise import (
    DEFAULT_FRAGMENT_BLOCK,
    DEFAULT_HALO,
    fragment_grid,
    grid_ws_fragments,
)

__all__ = [
    "LEVELS",
    "RegionGraph",
    "affinity_watershed",
    "agglomerate",
    "boundary_edges",
    "flood",
    "fragment_seeds",
    "group_pairs",
    "merge_roots",
    "nearest_neighbour_float",
    "number_by_first_voxel",
    "region_graph",
    "segment_fragments",
    "segmentations_at",
    "sum_groups",
    "watershed_fragments",
    "ws_fragments",
]


def affinity_watershed(
    affinities: np.ndarray,
    agglomeration_threshold: float | Sequence[float] = 0.5,
    *,
    seed_threshold: float = 0.5,
    seed_radius: int = 2,
    seeds_2d: bool = False,
    merge_function: str = "mean",
    quantile: float = 0.5,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    mask: np.ndarray | None = None,
    min_size: int = 0,
    small: str = "remove",
    merge_threshold: float | Sequence[float] | None = None,
    fragment_block: Sequence[int] | int | None = DEFAULT_FRAGMENT_BLOCK,
    halo: int = DEFAULT_HALO,
    join_seeds: bool = True,
) -> np.ndarray | list[np.ndarray]:
    """Segment (C, Z, Y, X) affinities by seeded watershed and mean-affinity agglomeration.

    Returns uint32 labels (Z, Y, X), 0 = background (outside ``mask``), ids 1..N by first voxel
    in C order; with a list of agglomeration thresholds, one segmentation per threshold from a
    single agglomeration pass. Segments under ``min_size`` voxels are removed or merged
    (``small``) as in :func:`pytc_decode.affinity_cc`. ``merge_threshold`` is the deprecated
    name of ``agglomeration_threshold`` (a warning; removed in the next release).

    The fragments are computed on the fixed grid ``fragment_block`` (voxels, z y x; default
    128 per axis), each cell seeing itself plus ``halo`` voxels
    (:func:`pytc_decode.ws_blockwise.grid_fragments`), and the region graph's sums are exact:
    the result is the same partition as the blockwise decode with any block size that is a
    multiple of the grid (``mean`` only); with ``join_seeds`` the pieces of one seed that a
    cell face cuts are joined first (:func:`pytc_decode.ws_blockwise.seed_keys`). With
    ``fragment_block`` None or 0 the fragments grow unbounded over the whole volume.
    """
    if merge_threshold is not None:
        import logging

        logging.getLogger("pytc.decode").warning(
            "pytc-decode: affinity_watershed(merge_threshold=...) is deprecated and will be "
            "removed in the next release: use agglomeration_threshold=...")
        agglomeration_threshold = merge_threshold
    given = agglomeration_threshold
    single = isinstance(given, int | float)
    thresholds = ([float(given)] if isinstance(given, int | float)
                  else [float(t) for t in given])
    if not thresholds:
        raise UserError("the list of agglomeration thresholds is empty",
                        "give e.g. 0.3 or 0.2,0.3,0.5")
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise UserError(f"agglomeration threshold {t} is outside [0, 1]",
                            "use e.g. --agglomeration-threshold 0.5")
    aff = nearest_neighbour_float(affinities)
    fragments, history = ws_fragments(aff, max(thresholds), seed_threshold=seed_threshold,
                                      seed_radius=seed_radius, seeds_2d=seeds_2d,
                                      merge_function=merge_function, quantile=quantile,
                                      voxel_size=voxel_size, mask=mask,
                                      fragment_block=fragment_block, halo=halo,
                                      join_seeds=join_seeds)
    segs = segment_fragments(fragments, history, thresholds, affinities=aff,
                             min_size=min_size, small=small)
    return segs[0] if single else segs


def ws_fragments(
    affinities: np.ndarray,
    max_threshold: float,
    *,
    seed_threshold: float = 0.5,
    seed_radius: int = 2,
    seeds_2d: bool = False,
    merge_function: str = "mean",
    quantile: float = 0.5,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    mask: np.ndarray | None = None,
    fragment_block: Sequence[int] | int | None = DEFAULT_FRAGMENT_BLOCK,
    halo: int = DEFAULT_HALO,
    join_seeds: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-4 once: the watershed fragments (Z, Y, X) uint32, ids 1..N (0 outside
    ``mask``), and their merge history up to ``max_threshold``: ``(M, 3)`` float64 rows
    ``(absorbed, into, score)`` (:func:`pytc_decode.agglomeration.agglomerate`). With
    ``fragment_block`` the fragments of that grid (:func:`grid_ws_fragments`, ids by first
    voxel): what a blockwise run on the grid writes; None or 0: unbounded."""
    grid = fragment_grid(fragment_block)
    if grid is not None:
        if merge_function != "mean":
            raise UserError(f"merge_function {merge_function} does not work with a fragment grid",
                            "use merge_function = 'mean', or no grid (ws.fragment_block = 0)")
        return grid_ws_fragments(affinities, max_threshold, grid, halo,
                                 seed_threshold=seed_threshold, seed_radius=seed_radius,
                                 seeds_2d=seeds_2d, voxel_size=voxel_size, mask=mask,
                                 join_seeds=join_seeds)
    aff = nearest_neighbour_float(affinities)
    seeds = fragment_seeds(aff, seed_threshold, seed_radius, seeds_2d=seeds_2d,
                           voxel_size=voxel_size, mask=mask)
    fragments = watershed_fragments(aff, seeds, mask)
    graph = region_graph(fragments, aff, merge_function, quantile)
    return fragments, agglomerate(graph, max_threshold)


def segment_fragments(fragments: np.ndarray, history: np.ndarray, thresholds: Sequence[float],
                      *, affinities: np.ndarray | None = None, min_size: int = 0,
                      small: str = "remove") -> list[np.ndarray]:
    """The segmentation (Z, Y, X, the dtype of ``fragments``) at each threshold: fragments
    joined by the merges of ``history`` scored below it, ids 1..N by first voxel in C order;
    segments under ``min_size`` voxels removed or merged (``small``; ``merge`` needs the
    ``affinities``)."""
    segs = segmentations_at(fragments, history, thresholds)
    if min_size > 1:
        from pytc_decode.cc import merge_small, relabel_consecutive

        for seg in segs:
            if small == "merge":
                if affinities is None:
                    raise UserError("--small merge needs the affinities",
                                    "use --small remove on fragments, or decode the "
                                    "affinities again")
                merge_small(seg, nearest_neighbour_float(affinities), min_size)
            else:
                relabel_consecutive(seg, np.bincount(seg.reshape(-1)) >= min_size)
    return segs
