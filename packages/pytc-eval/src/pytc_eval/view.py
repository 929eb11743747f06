"""``pytc-eval view``: volumes and the errors of an evaluation in a local Neuroglancer, offline.

The PyPI ``neuroglancer`` package serves its bundled browser client and the data from one
local web server (no internet, never the hosted client). Every volume opens in pytc's global
coordinates (its voxel size in nm and offset in voxels, as pytc-eval aligns them):

- local precomputed layers and single-channel OME-Zarr images are served as files (read by
  the browser, which decodes them and reads the same info / NGFF scale and translation as
  pytc; nothing is copied or read whole);
- HDF5, TIFF, ``.npy`` volumes and other zarr arrays (plain arrays, whose voxel size
  Neuroglancer cannot read, a level other than 0, channels) are served through
  ``neuroglancer.LocalVolume`` over a :class:`VolumeArray`, which reads only the box the
  browser asks for;
- ``gs://`` / ``s3://`` / ``http(s)://`` layers are Neuroglancer ``precomputed://`` sources.

Integer volumes are segmentation layers (uint8 single-channel ones are images), float and
uint8 volumes image layers, three or more channels an RGB image of channels 0..2 (the
nearest-neighbour affinities, z y x).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytc_core import UserError
from pytc_core.bbox import BBox
from pytc_core.output_run import open_input
from pytc_core.volume import Volume, parse_uri

__all__ = ["ERROR_COLORS", "ErrorSite", "ErrorViewer", "VolumeArray", "ViewLayer",
           "layer_kind", "read_errors_csv", "start_view"]

#: annotation colour of each error kind
ERROR_COLORS = {"merge": "#ff00ff", "split": "#00ffff"}
_KINDS = ("merge", "split")
#: columns an errors.csv must have (pytc-eval --errors writes these and more)
_REQUIRED_COLUMNS = ("segmentation", "kind", "segments", "skeletons", "z", "y", "x")
#: the largest label volume (bytes) read whole to make 3D meshes on demand
MESH_LIMIT_BYTES = 1 << 30
_RGB_SHADER = """#uicontrol invlerp normalized
void main() {
  emitRGB(vec3(normalized(getDataValue(0)), normalized(getDataValue(1)),
               normalized(getDataValue(2))));
}
"""
_ERROR_SHADER = """void main() {
  setColor(prop_color());
  setPointMarkerSize(16.0);
}
"""


@dataclass(frozen=True)
class ErrorSite:
    """One row of an errors.csv: a merge or a split at a voxel (z, y, x, global voxels)."""

    row: int  #: 1-based data row of the CSV (``--error K``)
    kind: str  #: ``merge`` or ``split``
    segmentation: str
    segments: tuple[int, ...]  #: predicted segment ids involved
    skeletons: tuple[int, ...]  #: ground-truth skeleton ids involved (= ground-truth ids)
    zyx: tuple[int, int, int]
    edges: int = 0  #: skeleton edges involved
    length_nm: float = 0.0  #: their path length (nm)

    def describe(self, total: int) -> str:
        """The stderr line naming this error."""
        what = (f"merge: segment {self.segments[0]} joins skeletons "
                f"{', '.join(map(str, self.skeletons))}" if self.kind == "merge" else
                f"split: skeleton {self.skeletons[0]} cut between segments "
                f"{' and '.join(map(str, self.segments))}")
        z, y, x = self.zyx
        return (f"error {self.row} ({total} in all): {what}; {self.edges} edges, "
                f"{self.length_nm:.0f} nm, at z,y,x {z},{y},{x} (n: next, p: previous)")


def _ids(text: str, what: str, row: int, path: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(";") if p.strip())
    except ValueError:
        raise UserError(f"{path} row {row}: bad {what} '{text}'",
                        "give the errors.csv that pytc-eval --errors wrote") from None


def read_errors_csv(path: str) -> list[ErrorSite]:
    """The rows of an errors.csv as written by ``pytc-eval --errors`` (UserError otherwise)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise UserError(f"{path} is not a pytc errors table (no column "
                                f"{', '.join(missing)})",
                                "give the errors.csv that pytc-eval --errors wrote")
            rows = list(reader)
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror})", "check the path") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a CSV file ({exc})",
                        "give the errors.csv that pytc-eval --errors wrote") from None
    sites = []
    for k, r in enumerate(rows, 1):
        if r["kind"] not in _KINDS:
            raise UserError(f"{path} row {k}: unknown kind '{r['kind']}'",
                            "give the errors.csv that pytc-eval --errors wrote")
        try:
            zyx = (int(r["z"]), int(r["y"]), int(r["x"]))
            edges = int(r.get("edges") or 0)
            length = float(r.get("length_nm") or 0.0)
        except ValueError:
            raise UserError(f"{path} row {k}: bad voxel or size",
                            "give the errors.csv that pytc-eval --errors wrote") from None
        sites.append(ErrorSite(k, r["kind"], r["segmentation"],
                               _ids(r["segments"], "segments", k, path),
                               _ids(r["skeletons"], "skeletons", k, path), zyx, edges, length))
    return sites


class VolumeArray:
    """An array-like view of a pytc :class:`Volume` for ``neuroglancer.LocalVolume``: indexing
    with slices reads only that box (global coordinates are the volume's offset + index).

    Axes (z, y, x) or (c, z, y, x). ``transpose()`` (used by LocalVolume for 3D meshes)
    reads the whole volume once, and refuses volumes over ``mesh_limit`` bytes.
    """

    def __init__(self, volume: Volume, mesh_limit: int = MESH_LIMIT_BYTES) -> None:
        self.volume = volume
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(volume.dtype)
        self.ndim = len(self.shape)
        self.mesh_limit = mesh_limit
        self.reads: list[BBox] = []  #: boxes read so far (global voxels), for tests and benches

    def __getitem__(self, index: Any) -> np.ndarray:
        if not isinstance(index, tuple):
            index = (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        spans = [s.indices(n) for s, n in zip(index, self.shape, strict=True)
                 if isinstance(s, slice)]
        if len(spans) != self.ndim or any(step != 1 for _, _, step in spans):
            raise IndexError("VolumeArray takes one contiguous slice per axis")
        channels = slice(*spans[0][:2]) if self.ndim == 4 else slice(None)
        spatial = spans[-3:]
        off = self.volume.offset
        box = BBox([off[i] + spatial[i][0] for i in range(3)],
                   [off[i] + max(spatial[i][0], spatial[i][1]) for i in range(3)])
        self.reads.append(box)
        data = self.volume.read(box)
        return data[channels] if self.ndim == 4 else data

    def transpose(self) -> np.ndarray:
        from neuroglancer.local_volume import MeshesNotSupportedForVolume

        if self.volume.nbytes > self.mesh_limit:
            raise MeshesNotSupportedForVolume()
        return np.asarray(self[...]).transpose()


def layer_kind(volume: Volume) -> str:
    """``segmentation``, ``image`` or ``rgb`` (three or more channels) for a volume."""
    if volume.ndim == 4:
        return "rgb" if volume.shape[0] >= 3 else "image"
    integer = np.issubdtype(volume.dtype, np.integer) or volume.dtype == np.bool_
    return "segmentation" if integer and volume.dtype != np.uint8 else "image"


@dataclass
class ViewLayer:
    """A volume to show: its layer name, URI and (once opened) the volume."""

    name: str
    uri: str
    volume: Volume | None = None
    role: str = ""  #: "raw", "gt" or "" (a positional URI)


def _nm_space(names: Sequence[str], voxel_size: Sequence[float]):
    import neuroglancer

    return neuroglancer.CoordinateSpace(names=list(names), units="nm",
                                        scales=[float(v) for v in voxel_size])


def _files_handler():
    """A tornado handler serving a folder with CORS; ``x`` is answered by ``x.gz``
    (Content-Encoding: gzip) when only that exists, as CloudVolume writes precomputed chunks."""
    from neuroglancer.static_file_server import CorsStaticFileHandler

    class FilesHandler(CorsStaticFileHandler):
        def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
            self._gzip = False
            if not os.path.isfile(absolute_path) and os.path.isfile(absolute_path + ".gz"):
                absolute_path += ".gz"
                self._gzip = True
            return super().validate_absolute_path(root, absolute_path)

        def set_extra_headers(self, path: str) -> None:
            if getattr(self, "_gzip", False):
                self.set_header("Content-Encoding", "gzip")
                self.set_header("Content-Type", "application/octet-stream")

        def log_exception(self, typ, value, tb) -> None:  # a missing chunk is a plain 404
            pass

    return FilesHandler


@dataclass
class ErrorViewer:
    """A running viewer: ``url`` (the local client), the layers, the errors and the one shown."""

    viewer: Any
    url: str
    layers: list[ViewLayer]
    errors: list[ErrorSite] = field(default_factory=list)
    current: int = 0  #: index into ``errors`` of the error shown
    seg_layer: str | None = None
    gt_layer: str | None = None
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    announce: Callable[[str], None] = lambda text: None
    served: dict[str, str] = field(default_factory=dict)  #: folder route → local folder

    def show(self, index: int) -> ErrorSite:
        """Centre the view on ``errors[index]`` (wrapping) and select its segments.

        ``current`` changes last, once the view has moved and the error is announced, so a
        caller (or test) that sees the new index also sees its view and its announcement.
        """
        index = index % len(self.errors)
        site = self.errors[index]
        z, y, x = site.zyx
        with self.viewer.txn() as s:
            s.position = [x + 0.5, y + 0.5, z + 0.5]
            if self.seg_layer is not None:
                s.layers[self.seg_layer].segments = set(site.segments)
            if self.gt_layer is not None:
                s.layers[self.gt_layer].segments = set(site.skeletons)
            s.selected_layer.layer = "errors"
        self.announce(site.describe(len(self.errors)))
        self.current = index
        return site

    def step(self, delta: int) -> ErrorSite:
        """Show the next (``delta`` = 1) or previous (-1) error."""
        return self.show(self.current + delta)


def _check_voxel_sizes(layers: Sequence[ViewLayer]) -> tuple[float, float, float]:
    first = layers[0]
    assert first.volume is not None
    for layer in layers[1:]:
        assert layer.volume is not None
        if not np.allclose(layer.volume.voxel_size, first.volume.voxel_size):
            raise UserError(f"{layer.uri} has voxel size {tuple(layer.volume.voxel_size)} nm "
                            f"but {first.uri} {tuple(first.volume.voxel_size)} nm",
                            "view volumes of one voxel size together (z, y, x nm)")
    return tuple(float(v) for v in first.volume.voxel_size)  # type: ignore[return-value]


def _source(layer: ViewLayer, base_url: str, token: str, served: dict[str, str]):
    """The Neuroglancer data source of one layer (a URL source or a LocalVolume)."""
    import neuroglancer

    vol = layer.volume
    assert vol is not None
    loc = parse_uri(layer.uri)
    spatial = ["z", "y", "x"]
    if loc.format == "precomputed" and loc.path is None:  # gs://, s3://, http(s)://
        return "precomputed://" + layer.uri.removeprefix("precomputed://").rstrip("/")
    if loc.format == "precomputed":
        route = f"{len(served)}"
        served[route] = os.path.abspath(str(loc.path))
        return f"precomputed://{base_url}/pytc-files/{token}/{route}"
    names = (["c^"] if vol.ndim == 4 else []) + spatial
    scales = ([1.0] if vol.ndim == 4 else []) + list(vol.voxel_size)
    if loc.format == "zarr" and _ome_image_dir(vol, loc) is not None:
        route = f"{len(served)}"
        served[route] = _ome_image_dir(vol, loc)  # type: ignore[assignment]
        scheme = "zarr3" if os.path.exists(os.path.join(served[route], "zarr.json")) else "zarr2"
        return f"{scheme}://{base_url}/pytc-files/{token}/{route}"
    kind = layer_kind(vol)
    dims = neuroglancer.CoordinateSpace(
        names=names, units=([""] if vol.ndim == 4 else []) + ["nm"] * 3, scales=scales)
    return neuroglancer.LocalVolume(
        VolumeArray(vol), dimensions=dims,
        volume_type="segmentation" if kind == "segmentation" else "image",
        voxel_offset=([0] if vol.ndim == 4 else []) + list(vol.offset))


def _ome_image_dir(vol: Volume, loc: Any) -> str | None:
    """The folder of the OME-Zarr image group ``vol`` is level 0 of, when it is a
    single-channel one the URI names (Neuroglancer then reads its NGFF scale and translation,
    as pytc does); None otherwise (plain zarr arrays, other levels, channels)."""
    array_path = getattr(vol, "array_path", loc.inner)
    inner = loc.inner.strip("/")
    if vol.ndim != 3 or array_path.strip("/") == inner or loc.path is None:
        return None
    level = array_path.strip("/")[len(inner):].strip("/")
    group = os.path.join(os.path.abspath(loc.path), inner)
    try:
        with open(os.path.join(group, "zarr.json"), encoding="utf-8") as fh:
            attrs = json.load(fh).get("attributes", {}).get("ome", {})
    except (OSError, ValueError):
        try:
            with open(os.path.join(group, ".zattrs"), encoding="utf-8") as fh:
                attrs = json.load(fh)
        except (OSError, ValueError):
            return None
    datasets = (attrs.get("multiscales") or [{}])[0].get("datasets") or [{}]
    return group if datasets[0].get("path") == level else None


def _layer(layer: ViewLayer, source) -> Any:
    import neuroglancer

    assert layer.volume is not None
    kind = layer_kind(layer.volume)
    if kind == "segmentation":
        return neuroglancer.SegmentationLayer(source=source)
    if kind == "rgb":
        return neuroglancer.ImageLayer(source=source, shader=_RGB_SHADER)
    return neuroglancer.ImageLayer(source=source)


def _annotations(sites: Sequence[ErrorSite], voxel_size: Sequence[float],
                 seg_layer: str | None, gt_layer: str | None):
    import neuroglancer

    relationships = {name: layer for name, layer in
                     (("segmentation", seg_layer), ("ground_truth", gt_layer)) if layer}
    annotations = []
    for site in sites:
        z, y, x = site.zyx
        links = {"segmentation": list(site.segments), "ground_truth": list(site.skeletons)}
        annotations.append(neuroglancer.PointAnnotation(
            id=str(site.row), point=[z + 0.5, y + 0.5, x + 0.5],
            segments=[links[name] for name in relationships],
            props=[ERROR_COLORS[site.kind], _KINDS.index(site.kind), site.edges,
                   site.length_nm, site.row],
            description=site.describe(len(sites))))
    return neuroglancer.LocalAnnotationLayer(
        dimensions=_nm_space(["z", "y", "x"], voxel_size),
        annotation_properties=[
            neuroglancer.AnnotationPropertySpec(id="color", type="rgb", default="#ffff00"),
            neuroglancer.AnnotationPropertySpec(id="kind", type="uint8", enum_values=[0, 1],
                                                enum_labels=list(_KINDS)),
            neuroglancer.AnnotationPropertySpec(id="edges", type="uint32"),
            neuroglancer.AnnotationPropertySpec(id="length_nm", type="float32"),
            neuroglancer.AnnotationPropertySpec(id="row", type="uint32"),
        ],
        annotation_relationships=list(relationships),
        linked_segmentation_layer=relationships,
        annotations=annotations, shader=_ERROR_SHADER)


def _unique_name(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name} ({i})", i + 1
    taken.add(out)
    return out


def _layer_name(uri: str) -> str:
    base = re.sub(r"/+$", "", uri.removeprefix("precomputed://"))
    name = os.path.basename(base.replace(":", "/")) or uri
    return re.sub(r"\.(npy|tiff?)$", "", name, flags=re.IGNORECASE)


def _same_uri(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        loc = parse_uri(u)
        if loc.path is None:
            return u.removeprefix("precomputed://").rstrip("/")
        return os.path.abspath(str(loc.path)) + ":" + loc.inner.strip("/")
    try:
        return norm(a) == norm(b)
    except UserError:
        return False


def start_view(uris: Sequence[str], *, raw: str | None = None, gt: str | None = None,
               errors: str | None = None, error: int | None = None,
               bind: str = "127.0.0.1", port: int = 0, token: str | None = None,
               layout: str = "4panel",
               announce: Callable[[str], None] = lambda text: None) -> ErrorViewer:
    """Open the volumes and start the local Neuroglancer server (returns once it listens).

    ``uris`` are shown in order after ``raw`` and before ``gt``; with ``errors`` (an
    errors.csv of pytc-eval) an annotation layer holds its rows of the segmentation shown
    (a URI given, else the CSV's segmentation), and the view opens at row ``error`` (1-based,
    default the first). Keys ``n`` / ``p`` step through the errors (``announce`` is called
    with the line naming each). UserError for volumes that do not open, different voxel
    sizes, an errors table that is not pytc's, a port in use.
    """
    import neuroglancer
    import neuroglancer.server

    sites = read_errors_csv(errors) if errors is not None else []
    uris = list(uris)
    if errors is not None and not uris:
        uris = list(dict.fromkeys(s.segmentation for s in sites))
    if not uris and raw is None and gt is None:
        raise UserError("nothing to view", "give volume URIs, --raw, --gt or --errors")
    taken: set[str] = set()
    layers = ([ViewLayer(_unique_name("raw", taken), raw, role="raw")] if raw else []) \
        + [ViewLayer(_unique_name(_layer_name(u), taken), u) for u in uris] \
        + ([ViewLayer(_unique_name("ground truth", taken), gt, role="gt")] if gt else [])
    for layer in layers:
        layer.volume = open_input(layer.uri)
    voxel_size = _check_voxel_sizes(layers)

    seg_layer = gt_layer = None
    if gt is not None:
        gt_layer = layers[-1].name
    if errors is not None:
        segs = [la for la in layers if la.role == "" and layer_kind(la.volume) == "segmentation"]  # type: ignore[arg-type]
        names = list(dict.fromkeys(s.segmentation for s in sites))
        match = [(la, n) for n in names for la in segs if _same_uri(la.uri, n)]
        if match:
            seg = match[0][0]
            sites = [s for s in sites if _same_uri(seg.uri, s.segmentation)]
        elif segs and len(names) <= 1:
            seg = segs[0]
        else:
            raise UserError(f"{errors} holds the errors of {', '.join(names) or 'nothing'}, "
                            "not of a segmentation given",
                            "give the segmentation it was written for (or none: it is opened)")
        seg_layer = seg.name
        if not sites and error is None:
            announce(f"pytc-eval view: {errors} has no error of {seg.uri}")
        elif error is None:
            error = sites[0].row
        rows = [s.row for s in sites]
        if sites and error not in rows:
            raise UserError(f"--error {error}: {errors} has no such row for {seg.uri}",
                            f"give a row number from {rows[0]} to {rows[-1]}")
        if not sites and error is not None:
            raise UserError(f"--error {error}: {errors} has no error of {seg.uri}",
                            "leave out --error")
    elif error is not None:
        raise UserError("--error needs --errors", "give the errors.csv as well")

    def refuse(exc: OSError) -> UserError:
        return UserError(f"cannot listen on {bind}:{port} ({exc.strerror})",
                         "pick another --port (or 0 for any free one)")

    if port:  # checked here: tornado leaves the socket of a failed bind open
        try:
            with socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tornado
                probe.bind((bind, port))
        except OSError as exc:
            raise refuse(exc) from None
    neuroglancer.set_server_bind_address(bind, port)
    try:
        neuroglancer.server.start()
    except OSError as exc:
        raise refuse(exc) from None
    server = neuroglancer.server.global_server
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    base_url = f"http://{host}:{server.port}"
    viewer = neuroglancer.Viewer(token=token)
    served: dict[str, str] = {}
    with viewer.txn() as s:
        s.dimensions = _nm_space(["x", "y", "z"], voxel_size[::-1])
        for layer in layers:
            s.layers[layer.name] = _layer(layer, _source(layer, base_url, viewer.token, served))
        if sites:
            s.layers["errors"] = _annotations(sites, voxel_size, seg_layer, gt_layer)
        else:
            assert layers[0].volume is not None
            center = [o + n // 2 for o, n in zip(layers[0].volume.offset,
                                                  layers[0].volume.spatial_shape, strict=True)]
            s.position = [center[2] + 0.5, center[1] + 0.5, center[0] + 0.5]
        s.layout = layout
        s.cross_section_scale = 0.5  # 2 screen pixels per voxel
    if served:
        server.app.add_handlers(r".*", [(rf"/pytc-files/{re.escape(viewer.token)}/{route}/(.*)",
                                         _files_handler(), {"path": path})
                                        for route, path in served.items()])
    out = ErrorViewer(viewer, f"{base_url}/v/{viewer.token}/", layers, sites, 0, seg_layer,
                      gt_layer, voxel_size, announce, served)
    if sites:
        viewer.actions.add("pytc-next-error", lambda _state: out.step(1))
        viewer.actions.add("pytc-previous-error", lambda _state: out.step(-1))
        with viewer.config_state.txn() as c:
            c.input_event_bindings.viewer["keyn"] = "pytc-next-error"
            c.input_event_bindings.viewer["keyp"] = "pytc-previous-error"
            c.status_messages["pytc"] = "n / p: next / previous error"
        out.show([s.row for s in sites].index(error))  # type: ignore[arg-type]
    return out


def tunnel_hint(port: int, url: str) -> str:
    """The SSH tunnel line printed for ``--bind 0.0.0.0``."""
    host = socket.gethostname()
    return (f"pytc-eval view: from your computer: ssh -N -L {port}:{host}:{port} "
            f"<login host>, then open {url}")


@contextlib.contextmanager
def term_sets(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM sets ``stop`` inside the ``with`` (main thread only; the previous handler
    comes back at its end). Entered before the URL is printed, so a TERM sent as soon as
    the URL is read stops the viewer cleanly instead of killing it."""
    import signal

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def serve_forever(stop: threading.Event | None = None) -> None:
    """Block until Ctrl-C, SIGTERM or ``stop``; then stop the server."""
    import neuroglancer

    stop = stop or threading.Event()
    try:
        with term_sets(stop):
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        neuroglancer.stop()
        sys.stderr.flush()

