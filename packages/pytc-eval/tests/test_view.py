"""pytc-eval view without a browser: the bundled client, every format's layer metadata and a
chunk over HTTP, the errors layer, stepping, bad input (issue 26)."""

import csv
import gzip
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

from pytc_core import UserError, create_volume, open_volume
from pytc_core.cli import run_entry_point
from pytc_eval.cli import app
from pytc_eval.view import ERROR_COLORS, VolumeArray, read_errors_csv, start_view

PYTC_EVAL = str(Path(sys.executable).parent / "pytc-eval")
VOXEL, OFFSET = (40.0, 4.0, 8.0), (3, 5, 7)


@pytest.fixture(autouse=True)
def stop_server():
    yield
    import neuroglancer

    neuroglancer.stop()


def get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.headers, resp.read()


def labels(shape=(6, 20, 24)):
    """Three slabs along x: ids 1, 2, 3 (uint32), varied so a slice is not constant."""
    lab = np.zeros(shape, np.uint32)
    lab[..., : shape[2] // 3] = 1
    lab[..., shape[2] // 3: 2 * shape[2] // 3] = 2
    lab[..., 2 * shape[2] // 3:] = 3
    lab[:, 0] = 0
    return lab


def write(uri, array, offset=OFFSET, **kw):
    vol = create_volume(str(uri), array.shape, array.dtype, voxel_size=VOXEL, offset=offset,
                        **kw)
    vol.write(array)
    return str(uri)


def test_client_is_bundled_and_served_locally(tmp_path):
    uri = write(tmp_path / "seg.npy", labels())
    view = start_view([uri])
    assert view.url.startswith("http://127.0.0.1:") and "/v/" in view.url
    status, headers, page = get(view.url)
    assert status == 200 and b"<html" in page.lower()
    scripts = re.findall(rb'src="(main[^"]*\.js)"', page)
    assert len(scripts) == 1, page[:500]
    status, headers, body = get(view.url + scripts[0].decode())
    assert status == 200 and len(body) > 100_000  # the whole client, not a loader from a CDN
    assert b"neuroglancer-demo.appspot.com" not in page


def _local_volume_info(view, name):
    url = view.viewer.state.layers[name].source[0].url
    key = url.rstrip("/").rsplit("/", 1)[1]
    base = view.url.split("/v/")[0]
    return base, key, json.loads(get(f"{base}/neuroglancer/info/{key}")[2])


@pytest.mark.parametrize("suffix", ["seg.h5:labels", "seg.tif", "seg.npy"])
def test_lazy_formats_have_pytc_coordinates_and_chunks(tmp_path, suffix):
    lab = labels()
    uri = write(tmp_path / suffix, lab)
    view = start_view([uri])
    layer = view.viewer.state.layers["seg"] if suffix != "seg.h5:labels" else \
        view.viewer.state.layers["labels"]
    assert layer.type == "segmentation"
    base, key, info = _local_volume_info(view, layer.name)
    assert info["coordinateSpace"] == {"z": [40e-9, "m"], "y": [4e-9, "m"], "x": [8e-9, "m"]}
    assert [int(v) for v in info["voxelOffset"]] == list(OFFSET)  # int64 as JSON strings
    assert [int(v) for v in info["shape"]] == list(lab.shape)
    assert info["volumeType"] == "segmentation" and info["dataType"] == "uint32"
    # a chunk as the client asks for it (array indices, full resolution, its npz encoding)
    assert info["encoding"] == "npz"
    status, _, body = get(f"{base}/neuroglancer/npz/{key}/1,1,1/1,4,8/5,12,20")
    assert status == 200
    assert np.array_equal(np.load(io.BytesIO(zlib.decompress(body))), lab[1:5, 4:12, 8:20])
    # read lazily: the source read exactly that box (global voxels)
    array = view.viewer.volume_manager.volumes[key.split(".", 1)[1]].data._data
    assert isinstance(array, VolumeArray)
    assert [(b.start, b.stop) for b in array.reads] == [((4, 9, 15), (8, 17, 27))]


def test_float_and_uint8_are_images_affinities_rgb(tmp_path):
    raw = write(tmp_path / "raw.npy", np.arange(6 * 20 * 24, dtype=np.uint8).reshape(6, 20, 24))
    aff = write(tmp_path / "aff.h5:aff",
                np.random.default_rng(0).random((3, 6, 20, 24), np.float32))
    view = start_view(["a.npy"] if False else [aff], raw=raw)
    layers = view.viewer.state.layers
    assert [la.name for la in layers] == ["raw", "aff"]
    assert layers["raw"].type == "image" and layers["aff"].type == "image"
    assert "emitRGB" in layers["aff"].shader and "getDataValue(2)" in layers["aff"].shader
    _, key, info = _local_volume_info(view, "aff")
    assert info["coordinateSpace"]["c^"] == [1, ""]
    assert [int(v) for v in info["voxelOffset"]] == [0, *OFFSET]


def test_precomputed_is_served_as_files(tmp_path):
    lab = labels()
    uri = write(tmp_path / "layers" / "seg", lab, layer_type="segmentation")
    view = start_view([uri])
    source = view.viewer.state.layers["seg"].source[0].url
    base = view.url.split("/v/")[0]
    assert source.startswith(f"precomputed://{base}/pytc-files/")
    url = source.removeprefix("precomputed://")
    status, headers, body = get(url + "/info")
    info = json.loads(body)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert info["scales"][0]["resolution"] == [8, 4, 40]  # x y z, as Neuroglancer reads it
    assert info["scales"][0]["voxel_offset"] == [7, 5, 3]
    key = info["scales"][0]["key"]
    chunk = info["scales"][0]["chunk_sizes"][0]
    name = f"7-{7 + chunk[0]}_5-{5 + chunk[1]}_3-{3 + chunk[2]}"  # global voxels, x_y_z
    status, headers, body = get(f"{url}/{key}/{name}")  # urllib leaves gzip to the caller
    assert headers["Content-Encoding"] == "gzip"
    raw = gzip.decompress(body)
    expected = lab[:chunk[2], :chunk[1], :chunk[0]]
    data = np.frombuffer(raw, "<u4").reshape(expected.shape)  # x-fastest = C order z, y, x
    assert np.array_equal(data, expected)


def test_plain_zarr_array_is_read_lazily_with_pytc_coordinates(tmp_path):
    """A zarr array without OME metadata: Neuroglancer cannot read pytc's voxel size from
    its attributes, so it is served like HDF5 (LocalVolume, chunk by chunk)."""
    import zarr

    lab = labels()
    arr = zarr.create_array(str(tmp_path / "seg.zarr"), shape=lab.shape, dtype=lab.dtype,
                            chunks=(4, 8, 8), zarr_format=2)
    arr[:] = lab
    arr.attrs.update({"resolution": list(VOXEL),
                      "offset": [o * v for o, v in zip(OFFSET, VOXEL, strict=True)]})
    uri = str(tmp_path / "seg.zarr")
    view = start_view([uri])
    base, key, info = _local_volume_info(view, "seg.zarr")
    assert info["coordinateSpace"] == {"z": [40e-9, "m"], "y": [4e-9, "m"], "x": [8e-9, "m"]}
    assert [int(v) for v in info["voxelOffset"]] == list(OFFSET)
    body = get(f"{base}/neuroglancer/npz/{key}/1,1,1/0,8,16/4,16,24")[2]
    assert np.array_equal(np.load(io.BytesIO(zlib.decompress(body))), lab[0:4, 8:16, 16:24])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_is_served_as_files_with_pytc_coordinates(tmp_path, zarr_format):
    """pytc's OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on v3): the group is served as files
    and Neuroglancer reads the same scale and translation pytc reads."""
    import zarr

    lab = labels()
    uri = write(tmp_path / "seg.zarr", lab, chunk_size=(4, 8, 8), zarr_format=zarr_format)
    vol = open_volume(uri)
    assert vol.voxel_size == VOXEL and vol.offset == OFFSET
    view = start_view([uri])
    source = view.viewer.state.layers["seg.zarr"].source[0]
    assert source.url.startswith(f"zarr{zarr_format}://http://127.0.0.1:")
    assert source.transform is None  # Neuroglancer's own NGFF reading
    url = source.url.split("://", 1)[1]
    copy = tmp_path / "fetched.zarr"
    copy.mkdir()
    group_meta = ["zarr.json"] if zarr_format == 3 else [".zgroup", ".zattrs"]
    for name in group_meta:
        status, headers, body = get(f"{url}/{name}")
        assert headers["Access-Control-Allow-Origin"] == "*"
        (copy / name).write_bytes(body)
    attrs = json.loads((copy / group_meta[-1]).read_bytes())
    ms = (attrs["attributes"]["ome"] if zarr_format == 3 else attrs)["multiscales"][0]
    transforms = {t["type"]: t for t in ms["datasets"][0]["coordinateTransformations"]}
    assert transforms["scale"]["scale"] == list(VOXEL)  # nm, z y x
    assert transforms["translation"]["translation"] == [o * v for o, v in
                                                        zip(OFFSET, VOXEL, strict=True)]
    level = ms["datasets"][0]["path"]
    # a chunk fetched over HTTP decodes (with the served metadata) to the array's slice
    array_meta = ["zarr.json"] if zarr_format == 3 else [".zarray"]
    chunk_key = "c/0/1/2" if zarr_format == 3 else "0.1.2"
    (copy / level / chunk_key).parent.mkdir(parents=True, exist_ok=True)
    for name in [*array_meta, chunk_key]:
        (copy / level / name).write_bytes(get(f"{url}/{level}/{name}")[2])
    fetched = zarr.open_array(str(copy / level), mode="r")
    assert np.array_equal(fetched[0:4, 8:16, 16:24], lab[0:4, 8:16, 16:24])


def test_remote_precomputed_is_a_url_source():
    from pytc_eval.view import ViewLayer, _source

    class Remote:
        ndim, voxel_size, offset = 3, VOXEL, OFFSET

    layer = ViewLayer("seg", "gs://bucket/seg/", Remote())  # type: ignore[arg-type]
    assert _source(layer, "http://x", "t", {}) == "precomputed://gs://bucket/seg"
    layer = ViewLayer("seg", "precomputed://s3://b/seg", Remote())  # type: ignore[arg-type]
    assert _source(layer, "http://x", "t", {}) == "precomputed://s3://b/seg"


ERRORS = """segmentation,kind,segments,skeletons,edges,length_nm,z,y,x,view,neuroglancer
{seg},merge,1,1;2,4,160.0,4,6,9,,
{seg},split,2;5,2,1,8.0,5,10,13,,
{other},split,7;8,3,2,16.0,3,5,7,,
{seg},split,3;4,3,3,24.0,6,12,20,,
"""


def errors_setup(tmp_path):
    seg = write(tmp_path / "seg.npy", labels())
    gt = write(tmp_path / "gt.npy", labels())
    errors = tmp_path / "errors.csv"
    errors.write_text(ERRORS.format(seg=seg, other=str(tmp_path / "other.npy")))
    return seg, gt, errors


def test_errors_layer_and_stepping(tmp_path):
    seg, gt, errors = errors_setup(tmp_path)
    lines = []
    view = start_view([seg], gt=gt, errors=str(errors), announce=lines.append)
    state = view.viewer.state
    layer = state.layers["errors"]
    assert [a.id for a in layer.annotations] == ["1", "2", "4"]  # rows of this segmentation
    assert [a.point.tolist() for a in layer.annotations] == [[4.5, 6.5, 9.5], [5.5, 10.5, 13.5],
                                                             [6.5, 12.5, 20.5]]
    assert layer.source[0].transform.output_dimensions.to_json() == {
        "z": [40e-9, "m"], "y": [4e-9, "m"], "x": [8e-9, "m"]}
    assert [[[int(i) for i in ids] for ids in a.segments] for a in layer.annotations] == [
        [[1], [1, 2]], [[2, 5], [2]], [[3, 4], [3]]]
    assert [list(a.props) for a in layer.annotations] == [
        [ERROR_COLORS["merge"], 0, 4, 160.0, 1], [ERROR_COLORS["split"], 1, 1, 8.0, 2],
        [ERROR_COLORS["split"], 1, 3, 24.0, 4]]
    assert dict(layer.linked_segmentation_layer) == {"segmentation": "seg",
                                                     "ground_truth": "ground truth"}
    # opens at the first error, its segments selected
    assert state.position.tolist() == [9.5, 6.5, 4.5]  # x, y, z
    assert state.layers["seg"].segments == {1} and state.layers["ground truth"].segments == {1, 2}
    assert lines[-1].startswith("error 1 (3 in all): merge: segment 1 joins skeletons 1, 2")
    view.viewer.actions.invoke("pytc-next-error", None)
    state = view.viewer.state
    assert state.position.tolist() == [13.5, 10.5, 5.5] and state.layers["seg"].segments == {2, 5}
    assert lines[-1].startswith("error 2 (3 in all): split: skeleton 2 cut between segments "
                                "2 and 5; 1 edges, 8 nm, at z,y,x 5,10,13")
    view.viewer.actions.invoke("pytc-next-error", None)
    assert view.viewer.state.position.tolist() == [20.5, 12.5, 6.5] and lines[-1].startswith(
        "error 4 ")
    view.viewer.actions.invoke("pytc-next-error", None)  # wraps around
    assert lines[-1].startswith("error 1 ")
    view.viewer.actions.invoke("pytc-previous-error", None)
    assert lines[-1].startswith("error 4 ")
    bindings = view.viewer.config_state.state.input_event_bindings.viewer
    assert bindings["keyn"] == "pytc-next-error" and bindings["keyp"] == "pytc-previous-error"


def test_error_k_opens_there_and_the_segmentation_comes_from_the_csv(tmp_path):
    seg, gt, errors = errors_setup(tmp_path)
    text = errors.read_text().splitlines()
    errors.write_text("\n".join(line for line in text if "other" not in line) + "\n")
    lines = []
    view = start_view([], gt=gt, errors=str(errors), error=3, announce=lines.append)
    assert [la.name for la in view.viewer.state.layers] == ["seg", "ground truth", "errors"]
    assert view.viewer.state.position.tolist() == [20.5, 12.5, 6.5]
    assert lines == ["error 3 (3 in all): split: skeleton 3 cut between segments 3 and 4; "
                     "3 edges, 24 nm, at z,y,x 6,12,20 (n: next, p: previous)"]


def run(capsys, *argv):
    code = run_entry_point("pytc-eval", app, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    seg, gt, errors = errors_setup(tmp_path)
    code, out, err = run(capsys, "view", tmp_path / "missing.h5:x")
    assert code == 2 and out == "" and err.count("\n") == 1 and "missing.h5" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    code, out, err = run(capsys, "view", seg, "--errors", bad)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "is not a pytc errors table" in err
    other = write(tmp_path / "other.npy", labels())
    create_volume(str(tmp_path / "coarse.npy"), (6, 20, 24), np.uint32, voxel_size=(8, 8, 8))
    code, out, err = run(capsys, "view", other, tmp_path / "coarse.npy")
    assert code == 2 and err.count("\n") == 1 and "voxel size" in err
    code, out, err = run(capsys, "view", seg, "--gt", gt, "--errors", errors, "--error", 3)
    assert code == 2 and "--error 3" in err and "from 1 to 4" in err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run(capsys, "view", seg, "--port", port)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_read_errors_csv_rejects_a_bad_kind(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("segmentation,kind,segments,skeletons,z,y,x\ns,oops,1,1,0,0,0\n")
    with pytest.raises(UserError, match="unknown kind 'oops'"):
        read_errors_csv(str(path))


def test_view_help_does_not_import_torch():
    code = ("import sys\nfrom pytc_core.cli import run_entry_point\nfrom pytc_eval.cli import app\n"
            "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    run_entry_point('pytc-eval', app, ['view', '--help'])\n"
            "assert 'Neuroglancer' in out.getvalue()\n"
            "print('torch' in sys.modules, 'neuroglancer' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_real_process_prints_one_url_pipes_and_stops_on_ctrl_c(tmp_path):
    seg = write(tmp_path / "seg.npy", labels())
    proc = subprocess.Popen([PYTC_EVAL, "view", "-", "--token", "fixed"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        proc.stdin.write(seg + "\n")
        proc.stdin.close()
        proc.stdin = None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v/fixed/", url), url
        assert get(url)[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert rest == ""  # the URL was the one stdout line
    assert "Traceback" not in err and "serving until Ctrl-C" in err
    proc = subprocess.Popen([PYTC_EVAL, "view", seg, "--bind", "0.0.0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        port = url.split(":")[2].split("/")[0]
        assert get(url)[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and f"ssh -N -L {port}:" in err


def test_errors_csv_rows_carry_a_view_command_that_opens_them(tmp_path, capsys):
    """pytc-eval --errors --raw on HDF5 volumes: every row has its view command, and that
    command opens the row (merges per segment, splits per skeleton and segment pair)."""
    import shlex

    gt = np.zeros((8, 8, 16), np.uint32)
    gt[:, :4], gt[:, 4:] = 1, 2
    seg = gt.copy()
    seg[:, 4:, 10:] = 5
    seg[:, 4:, 12:] = 6  # skeleton 2 cut twice: 5|6 and 2|5
    seg[:, :4] = 7
    seg[:, 4:, :3] = 7  # merge 1 and 2 in segment 7
    seg[:, 4:, 3] = 0  # background between: omitted edges, no row
    h5 = tmp_path / "vol.h5"
    for name, data in (("gt", gt), ("seg", seg), ("raw", (gt * 50).astype(np.uint8))):
        write(f"{h5}:{name}", data, offset=(0, 0, 0))
    nodes, edges = [], []
    for sid, y in ((1, 1), (2, 6)):
        for x in range(16):
            nodes.append({"id": sid * 100 + x, "skeleton_id": sid, "z": 4, "y": y, "x": x})
            if x:
                edges.append([sid * 100 + x - 1, sid * 100 + x])
    (tmp_path / "s.json").write_text(json.dumps({"nodes": nodes, "edges": edges}))
    errors = tmp_path / "errors.csv"
    code, _, err = run(capsys, f"{h5}:seg", "--gt", f"{h5}:gt", "--skeletons",
                       tmp_path / "s.json", "--errors", errors, "--raw", f"{h5}:raw", "--json")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(errors.read_text())))
    assert [(r["kind"], r["segments"], r["skeletons"], r["edges"], r["length_nm"], r["z"],
             r["y"], r["x"]) for r in rows] == [
        ("merge", "7", "1;2", "17", "136.0", "4", "1", "0"),
        ("split", "2;5", "2", "1", "8.0", "4", "6", "9"),
        ("split", "5;6", "2", "1", "8.0", "4", "6", "11")]
    assert all(r["neuroglancer"] == "" for r in rows)  # HDF5: no hosted link, none announced
    assert "pytc-eval serve" not in err
    for k, r in enumerate(rows, 1):
        assert shlex.split(r["view"]) == ["pytc-eval", "view", f"{h5}:seg", "--raw",
                                          f"{h5}:raw", "--gt", f"{h5}:gt", "--errors",
                                          str(errors), "--error", str(k)]
    lines = []
    args = shlex.split(rows[1]["view"])
    view = start_view([args[2]], raw=args[4], gt=args[6], errors=args[8], error=int(args[10]),
                      announce=lines.append)
    assert view.viewer.state.position.tolist() == [9.5, 6.5, 4.5]
    assert [la.name for la in view.viewer.state.layers] == ["raw", "seg", "ground truth",
                                                            "errors"]
    assert lines[-1].startswith("error 2 (3 in all): split: skeleton 2 cut between segments 2 and 5")


def test_a_copied_errors_csv_of_another_segmentation_is_refused(tmp_path, capsys):
    seg, gt, errors = errors_setup(tmp_path)
    other = write(tmp_path / "third.npy", labels())
    code, out, err = run(capsys, "view", other, "--errors", errors)
    assert code == 2 and "not of a segmentation given" in err
    shutil.rmtree(tmp_path)
