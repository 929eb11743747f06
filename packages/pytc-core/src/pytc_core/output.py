"""Whether a run may write its outputs: the checks before any input is read.

Every stage writes its outputs through these rules (see :mod:`pytc_core.output_run` for a
run's whole life: lease, run record, completion, cleanup); what is stored at a URI is
recognised by the I/O layer (:mod:`pytc_core.volume.stored`):

- :func:`check_output_target` runs before any input data is read: the output must not be (or
  lie inside, or contain) an input, nor another dataset of an input's HDF5 file unless
  ``allow_same_file``; its directory must be creatable and writable, and what is there must
  be absent or a recognised volume.
- :func:`check_shareable` refuses ``--blocks`` shares (separate processes) writing a
  single-file output (HDF5, TIFF, ``.npy``).
- :func:`remove_output` deletes only the recognised volume, keeping the lease of the run
  that writes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from pytc_core.errors import UserError
from pytc_core.volume.location import VolumeLocation, parse_uri
from pytc_core.volume.stored import (
    OutputState,
    check_creatable,
    inspect_output,
    local_base,
    remove_volume,
    write_problem,
)

__all__ = [
    "LEASE_NAME",
    "RECORD_NAME",
    "OutputState",
    "check_creatable",
    "check_not_an_input",
    "check_output_target",
    "check_file_target",
    "check_shareable",
    "inspect_output",
    "remove_output",
]

#: the lease file (:mod:`pytc_core.lease`) and run record (:mod:`pytc_core.output_run`) names
LEASE_NAME = "pytc_lease"
RECORD_NAME = "pytc_run.json"
#: formats that keep a whole volume (or several, HDF5) in one file: their I/O is serialised
#: within a process (:mod:`pytc_core.volume.file_lock`) and separate processes never write one
SINGLE_FILE_FORMATS = ("hdf5", "tiff", "npy")


def _identity(loc: VolumeLocation) -> tuple[str, Path | None, tuple[str, ...]]:
    base = local_base(loc)
    if base is None:
        return ("remote", None, (loc.uri.rstrip("/"),))
    real = Path(os.path.realpath(base))
    inner = tuple(p for p in loc.inner.split("/") if p) if loc.format in ("hdf5", "zarr") else ()
    return ("local", real, inner)


def _chunked_suggestion(loc: VolumeLocation) -> str:
    """'NAME (a precomputed layer) or NAME.zarr' beside the file of ``loc``."""
    assert loc.path is not None
    stem = loc.path.with_suffix("")
    name = f"{stem}_{loc.inner.replace('/', '_')}" if loc.inner else str(stem)
    return f"{name} (a precomputed layer) or {name}.zarr"


def check_not_an_input(output_uri: str, input_uris: Sequence[str | None], *,
                       allow_same_file: bool = False) -> None:
    """UserError when the output is one of the inputs, lies inside one, or contains one; also
    when it is another dataset of an input's HDF5 file, unless ``allow_same_file``."""
    out_loc = parse_uri(output_uri)
    out = _identity(out_loc)
    for in_uri in input_uris:
        if not in_uri:
            continue
        inp = _identity(parse_uri(in_uri))
        if out[0] == "remote" or inp[0] == "remote":
            if out == inp:
                raise UserError(f"output {output_uri} is the input {in_uri}",
                                "write the result to another output")
            continue
        o, i = out[1], inp[1]
        assert o is not None and i is not None
        if o == i:
            k = min(len(out[2]), len(inp[2]))
            if out[2][:k] == inp[2][:k]:  # same dataset/array, or one inside the other
                if out[2] == inp[2]:
                    raise UserError(f"output {output_uri} is the input {in_uri}",
                                    "write the result to another output")
                raise UserError(f"output {output_uri} overlaps the input {in_uri}",
                                "write the result to another output")
            if not allow_same_file and out_loc.format in SINGLE_FILE_FORMATS:
                raise UserError(f"output {output_uri} would be written into the file "
                                f"{out_loc.path} of the input {in_uri}",
                                f"write it to a separate file or a chunked format such as "
                                f"{_chunked_suggestion(out_loc)}, or pass --allow-same-file")
            continue
        if i in o.parents:
            raise UserError(f"output {output_uri} lies inside the input {in_uri}",
                            "write the result to another output")
        if o in i.parents:
            raise UserError(f"output {output_uri} contains the input {in_uri}",
                            "write the result to another output")


def check_output_target(uri: str, *, inputs: Sequence[str | None] = (),
                        overwrite: bool = False, allow_same_file: bool = False) -> OutputState:
    """The checks every stage runs on its output before it reads any input data.

    UserError when the output is an input, cannot be created, or holds anything pytc does
    not recognise as a volume of its format; with ``overwrite`` False also when it holds a
    volume (see :class:`pytc_core.output_run.OutputRun` for resuming a pytc run instead).
    ``allow_same_file`` lets the output be another dataset of an input's file.
    Returns what is there.
    """
    check_creatable(uri)
    check_not_an_input(uri, inputs, allow_same_file=allow_same_file)
    state = inspect_output(uri)
    if state.kind == "foreign":
        raise UserError(f"output {uri} is not a volume pytc can replace: {state.what}",
                        "choose another output; pytc never deletes files it did not write")
    if state.kind == "volume" and not overwrite:
        raise UserError(f"output {uri} already exists ({state.what})",
                        "pass --overwrite to replace it, or choose another output")
    return state


def check_shareable(uri: str) -> None:
    """UserError when ``uri`` is a single-file output (HDF5, TIFF, ``.npy``), which
    ``--blocks`` shares (separate processes, Slurm array tasks) cannot write together: pytc
    serialises a file's I/O only within one process and does not rely on HDF5 file locking."""
    loc = parse_uri(uri)
    if loc.format in SINGLE_FILE_FORMATS:
        raise UserError(f"--blocks shares cannot write the single {loc.format.upper()} file "
                        f"{loc.path} together",
                        f"write the output to a chunked format such as {_chunked_suggestion(loc)}")


def check_file_target(path: str | os.PathLike[str], *, overwrite: bool = False,
                      what: str = "output file", inputs: Sequence[str | None] = (),
                      recognise: Callable[[Path], bool] | None = None) -> Path:
    """Checks for a plain output file (a CSV, a JSON) before any compute: not an input, not a
    directory, a creatable writable parent, and an existing file only with ``overwrite`` and,
    given ``recognise``, only when ``recognise(path)`` says pytc wrote it. Creates nothing."""
    p = Path(os.path.abspath(os.path.expanduser(path)))
    if p.is_dir():
        raise UserError(f"{what} {path} is a directory", "give a file name")
    probe = p.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {what} {path}: {probe} is a file, not a directory",
                        "choose a path whose parent is a directory")
    problem = write_problem(probe)
    if problem is None and p.exists() and not os.access(p, os.W_OK):
        problem = f"{p} is read-only"
    if problem is not None:
        raise UserError(f"cannot write {what} {path}: {problem}", "choose a writable location")
    check_not_an_input(str(p), inputs)
    if p.exists():
        if not overwrite:
            raise UserError(f"{what} {path} already exists", "pass --overwrite to replace it")
        if recognise is not None and not recognise(p):
            raise UserError(f"{path} exists and was not written by pytc as {what}",
                            "choose another path; --overwrite replaces only pytc's own file")
    return p


def remove_output(uri: str, *, keep_lease: bool = True, remove_empty_file: bool = False) -> None:
    """Delete the recognised volume at ``uri`` and pytc's files about it, nothing else
    (:func:`pytc_core.volume.stored.remove_volume`); the lease file (and its members folder)
    stays unless ``keep_lease`` is False."""
    remove_volume(uri, keep=(LEASE_NAME, LEASE_NAME + ".members") if keep_lease else (),
                  remove_empty_file=remove_empty_file)
