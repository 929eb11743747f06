"""The errors table: every merge and split with a voxel to look at, the ``pytc-eval view``
command that opens it (any format, offline) and, for layers a browser can fetch, a link to the
hosted Neuroglancer.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pytc_core.volume import Volume
from pytc_eval.erl import MERGED, SPLIT, edge_lengths
from pytc_eval.score import Evaluation

__all__ = ["ERROR_COLUMNS", "OLD_ERROR_COLUMNS", "LinkSettings", "error_rows", "errors_csv",
           "layer_source", "local_layer_paths", "neuroglancer_link", "serve_root", "view_command"]

_REMOTE = ("gs://", "s3://", "http://", "https://")
ERROR_COLUMNS = ("segmentation", "kind", "segments", "skeletons", "edges", "length_nm", "z", "y",
                 "x", "view", "neuroglancer")
#: the header of the errors tables written before the ``edges``/``length_nm``/``view`` columns
OLD_ERROR_COLUMNS = ("segmentation", "kind", "segments", "skeletons", "z", "y", "x",
                     "neuroglancer")


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
                      segments: dict[str, Sequence[int]], viewer: str,
                      images: dict[str, str] | None = None) -> str:
    """A Neuroglancer URL with one segmentation layer per ``sources`` entry (name → source),
    after an image layer per ``images`` entry (the raw EM), centred on voxel ``zyx``
    (global), showing ``segments[name]`` of each layer."""
    vz, vy, vx = voxel_size
    state = {
        "dimensions": {"x": [vx * 1e-9, "m"], "y": [vy * 1e-9, "m"], "z": [vz * 1e-9, "m"]},
        "position": [zyx[2] + 0.5, zyx[1] + 0.5, zyx[0] + 0.5],
        "layers": [{"type": "image", "source": src, "name": name}
                   for name, src in (images or {}).items()]
        + [{"type": "segmentation", "source": src, "name": name,
            "segments": [str(i) for i in segments.get(name, [])]}
           for name, src in sources.items()],
        "layout": "4panel",
    }
    return viewer.rstrip("/") + "/#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")))


def error_rows(evaluation: Evaluation, seg: Volume, gt: Volume,
               settings: LinkSettings = LinkSettings(), root: str | None = None,
               raw: Volume | None = None) -> list[dict]:
    """One row per merging segment and per split (skeleton, segment pair), each with the
    skeleton edges involved (``edges``), their path length (``length_nm``, nm) and a voxel
    (z, y, x, global) to look at.

    A merge row names the segment (never 0, the background), the skeletons it joins, the
    merged edges inside it and a node of the first skeleton inside it; a split row names the
    skeleton, the two segments (ascending), the edges cut between them and the first such
    edge's first node. When every layer (the ground truth, the segmentation and ``raw`` if
    given) is a precomputed layer a browser can reach, each row carries a hosted Neuroglancer
    link (see :class:`LinkSettings`); :func:`errors_csv` adds the ``pytc-eval view`` command.
    """
    skel, det = evaluation.skeletons, evaluation.details
    if skel is None or not det:
        return []
    gt_src = layer_source(gt.uri, settings, root, gt.format)
    seg_src = layer_source(seg.uri, settings, root, seg.format)
    raw_src = layer_source(raw.uri, settings, root, raw.format) if raw is not None else None
    sources = {"ground truth": gt_src, "segmentation": seg_src} if gt_src and seg_src else None
    image = {"raw": raw_src} if raw_src else {}
    if raw is not None and raw_src is None:
        sources = None  # a link without the raw EM would hide what a proofreader needs

    def link(zyx: list[int], seg_ids: Sequence[int], gt_ids: Sequence[int]) -> str:
        if sources is None:
            return ""
        return neuroglancer_link(sources, gt.voxel_size, zyx,
                                 {"ground truth": gt_ids, "segmentation": seg_ids},
                                 settings.viewer, image)

    rows = []
    node_seg, node_vox = det["node_segment"], det["node_voxel"]
    outcome = det["edge_outcome"]
    idx = skel.edge_index()
    lengths = edge_lengths(skel, evaluation.report.voxel_size, idx)
    edge_seg = node_seg[idx[:, 0]] if len(idx) else np.zeros(0, np.uint64)
    merged = outcome == MERGED
    for segment, skel_ids in det["merge_stats"].items():
        if int(segment) == 0:
            continue  # background (e.g. left by --min-size) is not a merge to proofread
        first = np.flatnonzero((node_seg == np.uint64(segment))
                               & (skel.skeleton_ids == skel.skeleton_ids.dtype.type(skel_ids[0])))
        zyx = node_vox[first[0]].tolist()
        mask = merged & (edge_seg == np.uint64(segment))
        rows.append({"kind": "merge", "segments": str(segment),
                     "skeletons": ";".join(str(s) for s in skel_ids),
                     "edges": int(mask.sum()), "length_nm": _nm(lengths[mask].sum()),
                     "z": zyx[0], "y": zyx[1], "x": zyx[2],
                     "neuroglancer": link(zyx, [segment], skel_ids)})
    splits: dict[tuple[int, int, int], dict] = {}
    for e in np.flatnonzero(outcome == SPLIT):
        u, v = idx[e]
        sid = int(skel.skeleton_ids[u])
        a, b = sorted((int(node_seg[u]), int(node_seg[v])))
        row = splits.get((sid, a, b))
        if row is None:
            zyx = node_vox[u].tolist()
            row = splits[(sid, a, b)] = {
                "kind": "split", "segments": f"{a};{b}", "skeletons": str(sid),
                "edges": 0, "length_nm": 0.0, "z": zyx[0], "y": zyx[1], "x": zyx[2],
                "neuroglancer": link(zyx, [a, b], [sid])}
        row["edges"] += 1
        row["length_nm"] += float(lengths[e])
    for row in splits.values():
        row["length_nm"] = _nm(row["length_nm"])
    return rows + list(splits.values())


def _nm(value: float) -> float:
    """A length in nm rounded for the table (0.01 nm)."""
    return round(float(value), 2)


def view_command(seg_uri: str, gt_uri: str, raw_uri: str | None, errors_path: str,
                 row: int) -> str:
    """The ``pytc-eval view`` command line that opens errors.csv row ``row`` (1-based)."""
    import shlex

    args = ["pytc-eval", "view", seg_uri, *(["--raw", raw_uri] if raw_uri else []),
            "--gt", gt_uri, "--errors", errors_path, "--error", str(row)]
    return shlex.join(args)


def errors_csv(rows_by_seg: dict[str, list[dict]],
               view: Callable[[str, int], str] | None = None) -> bytes:
    """The errors of one or more segmentations as CSV bytes (columns :data:`ERROR_COLUMNS`);
    ``view(seg_uri, row)`` gives each row's ``view`` column (row: 1-based data row)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=ERROR_COLUMNS)
    writer.writeheader()
    k = 0
    for seg_uri, rows in rows_by_seg.items():
        for row in rows:
            k += 1
            writer.writerow({"segmentation": seg_uri, **row,
                             "view": view(seg_uri, k) if view is not None else ""})
    return text.getvalue().encode()
