"""Output safety in pytc-core: what --overwrite may replace, checks before compute, the lease,
run records (complete or not) and clean aborts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr

from pytc_core import open_volume
from pytc_core.errors import UserError
from pytc_core.lease import acquire_lease, read_lease
from pytc_core.output import (
    check_creatable,
    check_file_target,
    check_not_an_input,
    check_output_target,
    check_shareable,
    inspect_output,
    remove_output,
)
from pytc_core.output_run import claim_output, read_run_record, run_key
from pytc_core.volume import create_volume, volume_exists


def test_recognised_volumes_and_foreign_things(tmp_path):
    layer = str(tmp_path / "layer")
    create_volume(layer, (4, 4, 4), "uint8").write(np.ones((4, 4, 4), np.uint8))
    assert inspect_output(layer).kind == "volume"
    (tmp_path / "layer" / "pytc_config.toml").write_text("x = 1\n")  # pytc's files belong to it
    assert inspect_output(layer).kind == "volume"
    (tmp_path / "layer" / "notes.txt").write_text("mine")
    state = inspect_output(layer)
    assert state.kind == "foreign" and "notes.txt" in state.what

    (tmp_path / "notes.txt").write_text("my notes")
    assert inspect_output(str(tmp_path / "notes.txt")).what.endswith("is a file, not a precomputed layer")
    (tmp_path / "mydir").mkdir()
    (tmp_path / "mydir" / "a.tif").write_bytes(b"x")
    assert "not a precomputed layer (it holds a.tif)" in inspect_output(str(tmp_path / "mydir")).what
    (tmp_path / "empty").mkdir()
    assert inspect_output(str(tmp_path / "empty")).kind == "absent"

    np.save(tmp_path / "a.npy", np.zeros(3))
    assert inspect_output(str(tmp_path / "a.npy")).kind == "volume"
    (tmp_path / "b.npy").write_text("not numpy")
    assert inspect_output(str(tmp_path / "b.npy")).kind == "foreign"

    h5 = tmp_path / "f.h5"
    with h5py.File(h5, "w") as fh:
        fh["raw"] = np.zeros((2, 2, 2), np.uint8)
        fh.create_group("grp")["inner"] = np.zeros(2)
    assert inspect_output(f"{h5}:raw").kind == "volume"
    assert inspect_output(f"{h5}:seg").kind == "absent"
    assert "is an HDF5 group (holding inner)" in inspect_output(f"{h5}:grp").what
    assert "f.h5:raw is a dataset, so it cannot hold raw/x" in inspect_output(f"{h5}:raw/x").what
    (tmp_path / "t.h5").write_text("text")
    assert "is a file that is not HDF5" in inspect_output(f"{tmp_path / 't.h5'}:seg").what

    store = tmp_path / "s.zarr"
    zarr.create_array(str(store), shape=(2, 2, 2), dtype="uint8")
    assert inspect_output(str(store)).kind == "volume"
    assert "is a zarr array, so it cannot hold an array seg" in inspect_output(f"{store}/seg").what
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(2, 2, 2), dtype="uint8")
    assert inspect_output(f"{tmp_path / 'g.zarr'}/raw").kind == "volume"
    assert "is a zarr group (holding raw)" in inspect_output(str(tmp_path / "g.zarr")).what


def test_overwrite_replaces_only_the_recognised_volume(tmp_path):
    (tmp_path / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="not a volume pytc can replace: .*notes.txt is a file"):
        create_volume(str(tmp_path / "notes.txt"), (4, 4, 4), "uint8", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "my notes"

    h5 = tmp_path / "f.h5"
    create_volume(f"{h5}:keep", (4, 4, 4), "uint8").write(np.full((4, 4, 4), 3, np.uint8))
    create_volume(f"{h5}:seg", (4, 4, 4), "uint8").write(np.full((4, 4, 4), 5, np.uint8))
    create_volume(f"{h5}:seg", (4, 4, 4), "uint16", overwrite=True)  # one dataset, never the file
    assert open_volume(f"{h5}:keep").read().min() == 3
    assert open_volume(f"{h5}:seg").dtype == np.uint16
    with pytest.raises(UserError, match="refusing to delete .*is an HDF5 group"):
        with h5py.File(h5, "a") as fh:
            fh.create_group("grp")
        remove_output(f"{h5}:grp")

    layer = tmp_path / "layer"
    create_volume(str(layer), (4, 4, 4), "uint8").write(np.ones((4, 4, 4), np.uint8))
    (layer / "pytc_progress").mkdir()
    remove_output(str(layer))
    assert not layer.exists() and not volume_exists(str(layer))


def test_checks_before_compute(tmp_path):
    np.save(tmp_path / "aff.npy", np.zeros((3, 2, 2, 2), np.float32))
    with pytest.raises(UserError, match=r"cannot create .*aff.npy/seg: .*aff.npy is a file, not a directory"):
        check_creatable(str(tmp_path / "aff.npy" / "seg"))
    with pytest.raises(UserError, match="is the input"):
        check_not_an_input(str(tmp_path / "aff.npy"), [f"file://{tmp_path}/aff.npy"])
    with pytest.raises(UserError, match="lies inside the input"):
        check_not_an_input(str(tmp_path / "layer" / "seg"), [str(tmp_path / "layer")])
    with pytest.raises(UserError, match="contains the input"):
        check_not_an_input(str(tmp_path), [str(tmp_path / "aff.npy")])
    with pytest.raises(UserError, match=r"f.h5:seg would be written into the file .*f.h5 of the "
                       r"input .*f.h5:aff \(write it to a separate file or a chunked format such as "
                       r".*f_seg \(a precomputed layer\) or .*f_seg.zarr, or pass --allow-same-file\)"):
        check_not_an_input(f"{tmp_path}/f.h5:seg", [f"{tmp_path}/f.h5:aff"])
    with pytest.raises(UserError, match="would be written into the file"):
        check_output_target(f"{tmp_path}/f.h5:seg", inputs=[f"{tmp_path}/f.h5:aff"])
    check_not_an_input(f"{tmp_path}/f.h5:seg", [f"{tmp_path}/f.h5:aff"], allow_same_file=True)
    check_not_an_input(f"{tmp_path}/s.zarr/seg", [f"{tmp_path}/s.zarr/aff"])  # chunked: fine
    for single in (f"{tmp_path}/o.h5:seg", f"{tmp_path}/o.tif", f"{tmp_path}/o.npy"):
        with pytest.raises(UserError, match=r"--blocks shares cannot write the single .* together "
                           r"\(write the output to a chunked format such as .*o.* \(a precomputed "
                           r"layer\) or .*\.zarr\)"):
            check_shareable(single)
    check_shareable(f"{tmp_path}/o.zarr")
    check_shareable(f"{tmp_path}/layer")
    with pytest.raises(UserError, match="overlaps the input"):
        check_not_an_input(f"{tmp_path}/s.zarr/aff/x", [f"{tmp_path}/s.zarr/aff"])
    with pytest.raises(UserError, match="already exists .*--overwrite"):
        check_output_target(str(tmp_path / "aff.npy"))
    assert check_output_target(str(tmp_path / "aff.npy"), overwrite=True).kind == "volume"
    (tmp_path / "err.csv").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        check_file_target(tmp_path / "err.csv", overwrite=True)
    with pytest.raises(UserError, match="aff.npy is a file, not a directory"):
        check_file_target(tmp_path / "aff.npy" / "err.csv")
    assert check_file_target(tmp_path / "new" / "err.csv") == tmp_path / "new" / "err.csv"
    with pytest.raises(UserError, match="is the input"):
        check_file_target(tmp_path / "aff.npy", overwrite=True, inputs=[str(tmp_path / "aff.npy")])
    (tmp_path / "notes.csv").write_text("my table")
    with pytest.raises(UserError, match="notes.csv exists and was not written by pytc as the errors CSV"):
        check_file_target(tmp_path / "notes.csv", overwrite=True, what="the errors CSV",
                          recognise=lambda p: p.read_text().startswith("segmentation,"))
    assert not (tmp_path / "new").exists()  # checked, nothing created


HOLD = """
import sys, time
from pytc_core.lease import acquire_lease
lease = acquire_lease(sys.argv[1], sys.argv[2], what="out", command="holder")
print("held", flush=True)
time.sleep(60)
"""


def test_lease_same_key_joins_other_key_refused_dead_holder_is_stale(tmp_path):
    path = tmp_path / "pytc_lease"
    with subprocess.Popen([sys.executable, "-c", HOLD, str(path), "key-a"], stdout=subprocess.PIPE,
                          text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        assert read_lease(path).pid == holder.pid
        joined = acquire_lease(path, "key-a", what="out")
        assert not joined.owner  # shares of one run work together
        joined.release()
        assert path.exists()  # a joined run leaves the holder's lease
        with pytest.raises(UserError, match=rf"output out is being written by another run \(`holder`\), pid {holder.pid}"):
            acquire_lease(path, "key-b", what="out")
        holder.kill()
    lease = acquire_lease(path, "key-b", what="out")  # the dead holder's lease was stale
    assert lease.owner and read_lease(path).key == "key-b"
    lease.release()
    assert not path.exists()


def test_run_record_resume_and_refusals(tmp_path):
    uri = str(tmp_path / "seg")
    key = run_key("test", [str(tmp_path / "aff")], {"threshold": 0.5})
    assert key != run_key("test", [str(tmp_path / "aff")], {"threshold": 0.6})
    with pytest.raises(KeyboardInterrupt):
        with claim_output(uri, stage="test", key=key, command="pytc-test aff -o seg") as run:
            out = run.create((8, 8, 8), "uint8", chunk_size=(4, 4, 4))
            out.write(np.ones((4, 8, 8), np.uint8))
            run.made_progress()
            raise KeyboardInterrupt
    record = read_run_record(uri)
    assert record.state == "running" and record.command == "pytc-test aff -o seg"
    assert not (tmp_path / "seg" / "pytc_lease").exists()
    with pytest.raises(UserError, match=r"seg is not complete: the run `pytc-test aff -o seg` "
                                        r"\(started .*\) did not finish \(rerun `pytc-test aff -o seg` to resume it\)"):
        open_volume(uri)
    other = run_key("test", [str(tmp_path / "aff")], {"threshold": 0.7})
    with pytest.raises(UserError, match="holds the unfinished run `pytc-test aff -o seg`.*--overwrite"):
        with claim_output(uri, stage="test", key=other):
            pass
    with claim_output(uri, stage="test", key=key, command="pytc-test aff -o seg") as run:
        assert run.resuming
        out = run.create((8, 8, 8), "uint8", chunk_size=(4, 4, 4))
        assert out.read().sum() == 4 * 8 * 8  # the first half is still there
        out.write(np.ones((4, 8, 8), np.uint8), (4, 0, 0))
        run.complete()
    assert open_volume(uri).read().min() == 1 and read_run_record(uri).complete
    with pytest.raises(UserError, match="seg already exists \\(pass --overwrite"):
        with claim_output(uri, stage="test", key=key):
            pass
    with claim_output(uri, stage="test", key=other, overwrite=True) as run:
        assert run.mode == "fresh" and not volume_exists(uri)


@pytest.mark.parametrize("error", [UserError("NaN found"), KeyboardInterrupt()])
def test_an_aborted_fresh_run_leaves_nothing_behind(tmp_path, error):
    for uri in (f"{tmp_path}/new.h5:seg", f"{tmp_path}/sub/dir/layer", f"{tmp_path}/n.zarr/a/seg"):
        with pytest.raises(type(error)):
            with claim_output(uri, stage="test", key="k") as run:
                run.create((4, 4, 4), "uint8").write(np.ones((4, 4, 4), np.uint8))
                raise error
    assert sorted(os.listdir(tmp_path)) == []
    # an existing HDF5 file keeps its other datasets and is not removed
    create_volume(f"{tmp_path}/f.h5:raw", (2, 2, 2), "uint8")
    with pytest.raises(UserError):
        with claim_output(f"{tmp_path}/f.h5:seg", stage="test", key="k") as run:
            run.create((4, 4, 4), "uint8")
            raise UserError("NaN found")
    with h5py.File(tmp_path / "f.h5") as fh:
        assert list(fh) == ["raw"]
    assert sorted(os.listdir(tmp_path)) == ["f.h5"]


def test_sigterm_in_a_claimed_run_cleans_up(tmp_path):
    script = f"""
import time
from pytc_core.output_run import claim_output
with claim_output({str(tmp_path / 'seg.npy')!r}, stage="test", key="k") as run:
    run.create((4, 4, 4), "uint8")
    print("created", flush=True)
    time.sleep(60)
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout.readline().strip() == "created"
        assert json.loads((tmp_path / "seg.npy.pytc_lease").read_text())["pid"] == proc.pid
        assert (tmp_path / "seg.npy").exists()
        proc.terminate()
        assert proc.wait(timeout=30) == 1  # Terminated propagates out of the script
    assert os.listdir(tmp_path) == []  # volume, run record and lease removed
