"""Reading Neuroglancer precomputed skeleton layers (CloudVolume stays inside pytc-core).

Vertices come back in voxels, (z, y, x), global coordinates: CloudVolume's (x, y, z) nm
positions divided by the layer's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pytc_core.errors import UserError
from pytc_core.volume.location import REMOTE_PREFIXES, local_path
from pytc_core.volume.precomputed import quiet_cloud_libraries, to_cloudpath

__all__ = ["LayerSkeleton", "is_precomputed_layer", "read_skeleton_layer"]


@dataclass(frozen=True)
class LayerSkeleton:
    """One skeleton: its segment id, vertices (N, 3) in voxels (z, y, x), edges (E, 2) rows."""

    segment_id: int
    vertices: np.ndarray
    edges: np.ndarray


def is_precomputed_layer(uri: str) -> bool:
    """True for remote URIs and for local folders with an ``info`` file (``file://`` URIs
    percent-decoded)."""
    if uri.startswith(("precomputed://", *REMOTE_PREFIXES)):
        return True
    return (Path(local_path(uri)) / "info").is_file()


def _skeleton_ids(cv) -> list[int]:
    """The segment ids that have a skeleton in the layer (CloudVolume's own listing fails on
    unsharded layers, so those are listed with CloudFiles)."""
    if cv.skeleton.meta.is_sharded():
        return [int(x) for x in cv.skeleton.list()]
    from cloudfiles import CloudFiles  # heavy: only when skeletons are read
    quiet_cloud_libraries()

    path = cv.cloudpath.rstrip("/") + "/" + cv.skeleton.meta.skeleton_path
    names = (n.split(".")[0] for n in CloudFiles(path).list() if "/" not in n)
    return sorted(int(n) for n in names if n.isdigit())


def read_skeleton_layer(uri: str) -> list[LayerSkeleton]:
    """Every skeleton of a precomputed layer (a skeleton layer or a segmentation's skeletons),
    sorted by segment id. Raises UserError when the layer has no readable skeletons."""
    from cloudvolume import CloudVolume  # heavy: only when skeletons are read
    quiet_cloud_libraries()

    try:
        cv = CloudVolume(to_cloudpath(uri), progress=False)
        skels = cv.skeleton.get(_skeleton_ids(cv))
    except Exception as exc:  # cloud-volume raises many types for a missing/odd layer
        raise UserError(f"cannot read skeletons from precomputed layer {uri}: "
                        f"{type(exc).__name__}: {exc}",
                        "use a layer with a 'skeletons' entry in its info") \
            from None
    resolution_zyx = np.asarray(cv.resolution[::-1], np.float64)
    skels = skels if isinstance(skels, list) else [skels]
    return [LayerSkeleton(int(sk.id),
                          np.asarray(sk.vertices, np.float64)[:, ::-1] / resolution_zyx,
                          np.asarray(sk.edges, np.int64))
            for sk in sorted(skels, key=lambda sk: int(sk.id))]
