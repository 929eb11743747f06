"""The format backends: one module per format, imported on first use."""

from __future__ import annotations

import importlib
from pathlib import Path

from pytc_core.volume.base import FormatBackend
from pytc_core.volume.location import parse_uri

__all__ = ["BACKENDS", "backend", "sidecar_path"]

#: format name -> module defining its ``BACKEND`` (imported on first use, so opening an .npy
#: does not import CloudVolume)
BACKENDS: dict[str, str] = {
    "precomputed": "pytc_core.volume.precomputed",
    "hdf5": "pytc_core.volume.hdf5",
    "zarr": "pytc_core.volume.zarr_array",
    "tiff": "pytc_core.volume.tiff",
    "npy": "pytc_core.volume.npy",
}


def backend(fmt: str) -> FormatBackend:
    """The backend of format ``fmt`` (a key of ``BACKENDS``)."""
    return importlib.import_module(BACKENDS[fmt]).BACKEND


def sidecar_path(uri: str, name: str) -> Path | None:
    """Where a file called ``name`` describing the output at ``uri`` lives (local outputs).

    Inside directory outputs (precomputed layers, zarr arrays): ``<dir>/<name>``; beside file
    outputs: ``<file>[.<dataset>].<name>``. None for remote outputs.
    """
    loc = parse_uri(uri)
    return backend(loc.format).sidecar(loc, name)
