"""The stage's volume edges: output URIs, reading a box of the inputs, creating and finishing
an output. Coordinates are global voxels (z, y, x); affinities are
channels first."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.output_run import OutputRun
from pytc_core.volume import Volume, naming, parse_uri
from pytc_core.volume.padded import read_aligned
from pytc_decode.cc import apply_sigmoid, check_value_range, prepare_affinities

if TYPE_CHECKING:
    from pytc_decode.config import DecodeConfig

__all__ = ["check_mask", "create_output", "default_output_uri", "finish_output", "output_chunk",
           "read_inputs", "suffixed_uri"]

log = logging.getLogger("pytc.decode")


def default_output_uri(aff_uri: str) -> str:
    """Where the segmentation goes when no ``--output`` is given: beside the affinities, by
    the core's rule (:func:`pytc_core.volume.naming.default_output_uri`): ``dir/aff`` →
    ``dir/aff_seg`` (precomputed), ``x.zarr`` → ``x_seg.zarr``, ``x.zarr/aff`` →
    ``x.zarr/aff_seg``, ``x.h5:aff`` / ``x.tif`` / ``x.npy`` → a precomputed layer ``x_seg``
    beside the file (never inside an input's file)."""
    return naming.default_output_uri(aff_uri, "_seg")


def suffixed_uri(uri: str, suffix: str, dataset: str = "segmentation") -> str:
    """``uri`` with ``suffix`` added to its volume's name, in the same format and place
    (``dataset`` names an HDF5 file's dataset when the URI gives none)."""
    loc = parse_uri(uri)
    if loc.format == "hdf5":
        return f"{loc.path}:{(loc.inner or dataset)}{suffix}"
    if loc.format == "zarr" and loc.path is not None:
        if loc.inner:
            return f"{loc.path}/{loc.inner}{suffix}"
        return str(loc.path.with_name(loc.path.stem + suffix + ".zarr"))
    if loc.format in ("tiff", "npy") and loc.path is not None:
        return str(loc.path.with_name(loc.path.stem + suffix + loc.path.suffix))
    return uri.rstrip("/") + suffix


def check_mask(mask_vol: Volume | None, aff_vol: Volume) -> None:
    """UserError unless the mask is a 3D volume over the affinities' box."""
    if mask_vol is None:
        return
    if mask_vol.ndim != 3 or mask_vol.bbox != aff_vol.bbox:
        raise UserError(f"mask {mask_vol.uri} has shape {mask_vol.shape} at offset "
                        f"{mask_vol.offset}, the affinities cover {aff_vol.bbox}",
                        "pass a 3D mask over the same (z, y, x) box")


def read_inputs(aff_vol: Volume, mask_vol: Volume | None, cfg: DecodeConfig,
                box: BBox | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Affinities (sigmoid applied with ``logits``) and the voxels to segment (mask and
    foreground channel combined; None = all) of ``box`` (default: the whole volume), read in
    whole storage chunks (:func:`pytc_core.volume.padded.read_aligned`)."""
    aff = aff_vol.read() if box is None else read_aligned(aff_vol, box)
    if cfg.logits:
        aff = apply_sigmoid(aff)
    mask = (None if mask_vol is None else mask_vol.read() if box is None
            else read_aligned(mask_vol, box))
    if cfg.foreground_channel is None:
        return aff, mask
    assert cfg.foreground_threshold is not None
    fg_channel = aff[cfg.foreground_channel]
    check_value_range(fg_channel, f"the foreground channel {cfg.foreground_channel}")
    fg_aff, fg_t = prepare_affinities(aff[[0, 1, cfg.foreground_channel]],
                                      cfg.foreground_threshold)
    fg = fg_aff[2] > fg_t
    return aff, (fg if mask is None else fg & (mask != 0))


def output_chunk(block_size: Sequence[int]) -> tuple[int, ...]:
    """The output's chunk size for blocks of ``block_size`` (voxels, z y x): 64 where the
    block is a multiple of 64, else the block itself, so every block write is whole chunks."""
    return tuple(b if b < 64 or b % 64 else 64 for b in block_size)


def create_output(claim: OutputRun, aff_vol: Volume, dtype: np.dtype, chunk: tuple[int, ...],
                  restart: bool = False) -> Volume:
    """The output volume: created, or reopened when ``claim`` resumes this run's output
    (``restart``: a whole-volume decode writes it again from scratch)."""
    return claim.create(aff_vol.spatial_shape, dtype, voxel_size=aff_vol.voxel_size,
                        offset=aff_vol.offset, chunk_size=chunk, layer_type="segmentation",
                        restart=restart)


def finish_output(claim: OutputRun, cfg: DecodeConfig) -> None:
    """The resolved config beside the output, then the output marked complete."""
    from pytc_core.config import save_config_next_to

    save_config_next_to(claim.uri, cfg, command="pytc-decode")
    claim.complete()


