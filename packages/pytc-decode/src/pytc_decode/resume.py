"""The identity of a blockwise run, so a resumed run never reuses blocks of another one.

A blockwise decode keeps its per-block files in a scratch folder beside the output. The
folder belongs to one run: the whole resolved config, the block plan and the identity of the
inputs (affinities and mask). That description is stored in the folder as ``run.json`` by
the first step that creates it; every later step (a resumed run, a Slurm share, the reduce,
the relabel) compares its own description with it and refuses on a difference.

An input's identity is :func:`pytc_core.volume.identity.volume_identity`: its geometry, the
metadata of the array read (a precomputed layer's info without its other scales) and a hash of
a few sampled chunks; no walk over its files. Adding a mip to an input mid-run keeps the
identity; rewriting a sampled chunk, or the input's metadata, changes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.volume import Volume
from pytc_core.volume.identity import volume_identity

__all__ = ["RUN_FILE", "check_run", "input_identity", "run_key"]

RUN_FILE = "run.json"


def input_identity(vol: Volume, output_uri: str | None = None) -> dict[str, Any]:
    """What identifies the data of ``vol`` (see the module docstring); ``output_uri`` is
    unused (kept for callers: the identity no longer depends on the input's file times)."""
    del output_uri
    return volume_identity(vol)


def run_key(description: dict[str, Any]) -> str:
    """The description as canonical JSON text (the marker files are named by its hash)."""
    return json.dumps(description, sort_keys=True, indent=1)


def check_run(workdir: Path, key: str, *, create: bool) -> None:
    """Make sure the scratch folder ``workdir`` belongs to the run described by ``key``.

    With ``create``, a folder without ``run.json`` gets ours; one of another run is refused
    with a one-line UserError naming the options that differ.
    """
    path = workdir / RUN_FILE
    if not path.exists():
        if create:
            write_atomic(path, key.encode())
        return
    stored = path.read_text()
    if stored == key:
        return
    try:
        old, new = json.loads(stored), json.loads(key)
        diff = _differences(old, new)
    except ValueError:
        diff = [RUN_FILE]
    raise UserError(f"the blockwise scratch folder {workdir} holds blocks of a run with other "
                    f"options or inputs (differs in: {', '.join(diff[:4])})",
                    "pass --overwrite to start afresh, or rerun with the same options and inputs")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            if k not in old or k not in new:
                out.append(prefix + k)
            else:
                out += _differences(old[k], new[k], prefix + k + ".")
        return out
    return [] if old == new else [prefix.rstrip(".")]
