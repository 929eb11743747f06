"""Where a stage writes when no ``--output`` is given.

One rule for every stage (the stage gives its suffix: pytc-infer ``_affinities``,
pytc-decode ``_seg``): the output is a new volume **beside** the input, named after it with
the suffix, never inside the input's own file.

- a precomputed layer (local or remote): ``dir/raw`` → ``dir/raw<suffix>``; one of its
  scales ``dir/raw@mip=1`` → ``dir/raw_mip1<suffix>``;
- zarr, a chunked store that holds several arrays: the same format and place,
  ``x.zarr`` → ``x<suffix>.zarr``, ``x.zarr/raw`` → ``x.zarr/raw<suffix>``;
- a single-file format (HDF5 dataset, TIFF, ``.npy``): a precomputed layer beside the file,
  named after the file, ``dir/raw.h5:raw`` → ``dir/raw<suffix>``, ``x.tif`` → ``x<suffix>``
  (a file cannot take blockwise writers, and an output in an input's file is refused).
"""

from __future__ import annotations

from pytc_core.errors import UserError
from pytc_core.volume.location import parse_uri, split_mip

__all__ = ["default_output_uri"]

#: file extensions dropped from a single file's name
_FILE_SUFFIXES = (".h5", ".hdf5", ".hdf", ".tiff", ".tif", ".npy")


def default_output_uri(input_uri: str, suffix: str) -> str:
    """The default output of a stage reading ``input_uri`` (see the module docstring);
    ``suffix`` is the stage's, e.g. ``"_affinities"``. UserError when no name can be
    derived (pass ``--output``)."""
    loc = parse_uri(input_uri)
    if loc.format == "precomputed":  # layer@mip=N → layer_mipN<suffix>, beside the layer
        base, mip = split_mip(input_uri)
        return base.rstrip("/") + (f"_mip{mip}" if mip else "") + suffix
    path = loc.path
    if path is None:  # only precomputed layers are remote
        raise UserError(f"cannot derive an output URI from {input_uri}", "pass --output")
    if loc.format == "zarr":
        if loc.inner:
            return f"{path}/{loc.inner.rstrip('/')}{suffix}"
        return str(path.with_name(path.name[: -len(".zarr")] + suffix + ".zarr"))
    stem = path.name
    for ext in _FILE_SUFFIXES:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    return str(path.with_name(stem + suffix))
