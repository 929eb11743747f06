"""The errors table: every merge and split with a voxel to look at and a Neuroglancer link.

A browser can open a Neuroglancer link only to layers it can fetch over HTTP(S): layers on
``gs://``, ``s3://`` and ``http(s)://`` are linked directly; local layers (a path or
``file://``) are linked through a local file server (``pytc-eval serve DIR``, CloudVolume's
server with CORS) at ``local_server``, which serves ``local_root`` (default: the deepest
folder holding both layers).
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytc_core.volume import Volume
from pytc_eval.erl import SPLIT
from pytc_eval.score import Evaluation

__all__ = ["ERROR_COLUMNS", "LinkSettings", "error_rows", "errors_csv", "layer_source",
           "local_layer_paths", "neuroglancer_link", "serve_root"]

_REMOTE = ("gs://", "s3://", "http://", "https://")
ERROR_COLUMNS = ("segmentation", "kind", "segments", "skeletons", "z", "y", "x", "neuroglancer")


@dataclass(frozen=True)
class LinkSettings:
    """Where the errors table's Neuroglancer links point (TOML table ``[eval.neuroglancer]``)."""

    #: the Neuroglancer app the links open
    viewer: str = "https://neuroglancer-demo.appspot.com"
    #: address of the file server for local layers (``pytc-eval serve DIR --port 8080``)
    local_server: str = "http://localhost:8080"
    #: the folder that server serves (default: the deepest folder holding every local layer)
    local_root: str | None = None


def local_layer_paths(volumes: Sequence[Volume]) -> list[str]:
    """Absolute paths of the local precomputed layers among ``volumes``."""
    out = []
    for vol in volumes:
        uri = vol.uri.removeprefix("precomputed://")
        if vol.format == "precomputed" and not uri.startswith(_REMOTE):
            out.append(os.path.abspath(urllib.parse.unquote(uri.removeprefix("file://"))))
    return out


def serve_root(volumes: Sequence[Volume], settings: LinkSettings) -> str | None:
    """The folder the local file server must serve for these volumes' links (None: none local)."""
    paths = local_layer_paths(volumes)
    if not paths:
        return None
    if settings.local_root is not None:
        return os.path.abspath(settings.local_root)
    return os.path.commonpath([os.path.dirname(p) for p in paths])


def layer_source(uri: str, settings: LinkSettings = LinkSettings(), root: str | None = None,
                 format: str = "precomputed") -> str | None:  # noqa: A002
    """The Neuroglancer data source a browser can open for the layer at ``uri`` (None for
    formats other than precomputed, and for local layers outside the served folder ``root``).

    ``gs://``, ``s3://`` and ``http(s)://`` layers are read directly; a local layer through
    the file server at ``settings.local_server`` serving ``root`` (default: its parent).
    """
    if format != "precomputed":
        return None
    uri = uri.removeprefix("precomputed://")
    if uri.startswith(_REMOTE):
        return "precomputed://" + uri.rstrip("/")
    path = os.path.abspath(urllib.parse.unquote(uri.removeprefix("file://")))
    base = os.path.abspath(root) if root is not None else os.path.dirname(path)
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        return None  # outside the served folder: no link rather than a broken one
    return ("precomputed://" + settings.local_server.rstrip("/") + "/"
            + urllib.parse.quote(rel.replace(os.sep, "/")))


def neuroglancer_link(sources: dict[str, str], voxel_size: Sequence[float], zyx: Sequence[int],
                      segments: dict[str, Sequence[int]], viewer: str) -> str:
    """A Neuroglancer URL with one segmentation layer per ``sources`` entry (name → source),
    centred on voxel ``zyx`` (global), showing ``segments[name]`` of each layer."""
    vz, vy, vx = voxel_size
    state = {
        "dimensions": {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]},
        "position": [zyx[2] + 0.5, zyx[1] + 0.5, zyx[0] + 0.5],
        "layers": [{"type": "segmentation", "source": src, "name": name,
                    "segments": [str(i) for i in segments.get(name, [])]}
                   for name, src in sources.items()],
        "layout": "4panel",
    }
    return viewer.rstrip("/") + "/#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))


def error_rows(evaluation: Evaluation, seg: Volume, gt: Volume,
               settings: LinkSettings = LinkSettings(), root: str | None = None) -> list[dict]:
    """One row per merging segment and per split edge, each with a voxel (z, y, x, global).

    A merge row names the segment, the merged skeletons and a node of the first of them inside
    the segment; a split row names the skeleton, the two segments and the edge's first node.
    When both volumes are precomputed layers a browser can reach, each row carries a
    Neuroglancer link (see :class:`LinkSettings`).
    """
    skel, det = evaluation.skeletons, evaluation.details
    if skel is None or not det:
        return []
    gt_src = layer_source(gt.uri, settings, root, gt.format)
    seg_src = layer_source(seg.uri, settings, root, seg.format)
    sources = {"ground truth": gt_src, "segmentation": seg_src} if gt_src and seg_src else None

    def link(zyx: list[int], seg_ids: Sequence[int], gt_ids: Sequence[int]) -> str:
        if sources is None:
            return ""
        return neuroglancer_link(sources, gt.voxel_size, zyx,
                                 {"ground truth": gt_ids, "segmentation": seg_ids},
                                 settings.viewer)

    rows = []
    node_seg, node_vox = det["node_segment"], det["node_voxel"]
    for segment, skel_ids in det["merge_stats"].items():
        first = np.flatnonzero((node_seg == np.uint64(segment))
                               & (skel.skeleton_ids == skel.skeleton_ids.dtype.type(skel_ids[0])))
        zyx = node_vox[first[0]].tolist()
        rows.append({"kind": "merge", "segments": str(segment),
                     "skeletons": ";".join(str(s) for s in skel_ids),
                     "z": zyx[0], "y": zyx[1], "x": zyx[2],
                     "neuroglancer": link(zyx, [segment], skel_ids)})
    idx = skel.edge_index()
    for e in np.flatnonzero(det["edge_outcome"] == SPLIT):
        u, v = idx[e]
        zyx = node_vox[u].tolist()
        sid = int(skel.skeleton_ids[u])
        pair = [int(node_seg[u]), int(node_seg[v])]
        rows.append({"kind": "split", "segments": f"{pair[0]};{pair[1]}", "skeletons": str(sid),
                     "z": zyx[0], "y": zyx[1], "x": zyx[2],
                     "neuroglancer": link(zyx, pair, [sid])})
    return rows


def errors_csv(rows_by_seg: dict[str, list[dict]]) -> bytes:
    """The errors of one or more segmentations as CSV bytes (columns :data:`ERROR_COLUMNS`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=ERROR_COLUMNS)
    writer.writeheader()
    for seg_uri, rows in rows_by_seg.items():
        for row in rows:
            writer.writerow({"segmentation": seg_uri, **row})
    return text.getvalue().encode()
