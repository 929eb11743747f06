"""The ``pytc-decode`` command: affinities → segmentation layer, prints the output URI."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import (
    emit,
    parse_block_size,
    resolve_input_uri,
    run_entry_point,
    setup_logging,
)
from pytc_core.errors import UserError
from pytc_decode import __version__

log = logging.getLogger("pytc.decode")

app = cyclopts.App(
    name="pytc-decode",
    version=__version__,
)


@app.default
def decode(
    aff_uri: Annotated[str, Parameter(name="AFF_URI", allow_leading_hyphen=True)],
    /,
    *,
    output: Annotated[str | None, Parameter(name=["--output", "-o"])] = None,
    threshold: Annotated[float | None, Parameter(name="--threshold")] = None,
    min_size: Annotated[int | None, Parameter(name="--min-size")] = None,
    small: Annotated[str | None, Parameter(name="--small")] = None,
    mask: Annotated[str | None, Parameter(name="--mask")] = None,
    foreground_channel: Annotated[int | None, Parameter(name="--foreground-channel")] = None,
    foreground_threshold: Annotated[float | None, Parameter(name="--foreground-threshold")] = None,
    dust: Annotated[bool, Parameter(name="--dust", negative="")] = False,
    method: Annotated[str | None, Parameter(name="--method")] = None,
    block_size: Annotated[str | None, Parameter(name="--block-size")] = None,
    blocks: Annotated[str | None, Parameter(name="--blocks")] = None,
    step: Annotated[str, Parameter(name="--step")] = "all",
    config: Annotated[str | None, Parameter(name="--config")] = None,
    set_: Annotated[list[str] | None, Parameter(name="--set")] = None,
    overwrite: Annotated[bool, Parameter(name="--overwrite", negative="")] = False,
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False,
) -> int:
    """Segment an affinity volume by connected components of its above-threshold edges.

    The input is channels first (C, Z, Y, X): channels 0, 1, 2 are the z, y, x
    nearest-neighbour affinities (channel c at voxel v links v and v - e_c), further channels
    are long-range and ignored by CC. Two voxels are joined when their edge's affinity is
    above the threshold (6-connectivity); voxels with no such edge are background (0). Ids
    are consecutive, numbered by first voxel in C order. Writes a uint32 segmentation
    (uint64 for volumes of 2**32 voxels or more), prints its URI on stdout and a summary
    (segments, sizes, labelled voxels) on stderr.

    Examples::

        pytc-decode aff_layer --output seg_layer --threshold 0.5
        pytc-decode aff.h5:aff -o seg.h5:seg --min-size 100 --small merge --dust
        pytc-infer ... | pytc-decode - --block-size 128        # larger than memory
        # Slurm array task I of 16: label shares, one reduce, relabel shares
        pytc-decode aff -o seg --block-size 128 --step label --blocks $I/16
        pytc-decode aff -o seg --block-size 128 --step reduce
        pytc-decode aff -o seg --block-size 128 --step relabel --blocks $I/16

    Parameters
    ----------
    aff_uri
        Affinity volume URI (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``,
        ``.npy``); ``-`` reads it from stdin. Float values in [0, 1] (integer dtypes are read
        as fractions of their maximum).
    output
        Segmentation URI (default: beside the input, ``<name>_seg``).
    threshold
        Edges with affinity strictly above this join their voxels, in [0, 1] (default 0.5).
    min_size
        Segments under this many voxels are removed (default 0: keep all).
    small
        What happens to segments under ``--min-size``: ``remove`` (background, default) or
        ``merge`` into the neighbour they touch most strongly (whole-volume only).
    mask
        3D volume over the same box; only its non-zero voxels are segmented.
    foreground_channel
        Index of a foreground-probability channel (models with a foreground output).
    foreground_threshold
        Voxels whose foreground channel is not above this are background.
    dust
        Add a count of small segments (1, 2-9, 10-99, 100-999 voxels) to the summary.
    method
        ``cc`` (default) or ``mws``: mutex watershed on all channels (needs the optional
        ``mwatershed`` package and ``offsets`` of the long-range channels in the config).
    block_size
        Decode block by block with blocks of this many voxels (``128`` or ``z,y,x``); use a
        multiple of the input's chunk size. The result is identical to a whole-volume decode.
    blocks
        ``i/n``: only task i's share of the blocks (0-based), with ``--step label|relabel``.
    step
        Blockwise step: ``all`` (default), ``label``, ``reduce`` or ``relabel``.
    config
        TOML file with these options (table ``[decode]`` or the whole file).
    set_
        Override any config key: ``--set key=value`` (repeatable; values are TOML literals,
        e.g. ``--set offsets=[[-3,0,0]]``). Flags win over the file, ``--set`` over flags.
    overwrite
        Replace an existing output.
    quiet
        Warnings only on stderr.
    verbose
        Debug logging on stderr.

    """
    setup_logging(quiet, verbose)
    from pytc_core.config import parse_set_options, resolve_config
    from pytc_core.volume import open_volume
    from pytc_decode.decode import (
        DecodeConfig,
        decode_blockwise,
        decode_volume,
        default_output_uri,
    )

    cfg = resolve_config(DecodeConfig, config, {
        "threshold": threshold, "min_size": min_size, "small": small, "mask": mask,
        "foreground_channel": foreground_channel, "foreground_threshold": foreground_threshold,
        "method": method, "block_size": parse_block_size(block_size),
        "dust": dust or None}, section="decode", text_overrides=parse_set_options(set_))
    uri = resolve_input_uri(aff_uri)
    aff_vol = open_volume(uri)
    out_uri = output or default_output_uri(uri)
    mask_vol = open_volume(cfg.mask) if cfg.mask else None
    if cfg.block_size is None:
        if blocks is not None or step != "all":
            raise UserError("--blocks and --step need --block-size", "add e.g. --block-size 128")
        stats = decode_volume(aff_vol, out_uri, cfg, mask_vol=mask_vol, overwrite=overwrite)
    else:
        stats = decode_blockwise(aff_vol, out_uri, cfg, mask_vol=mask_vol, overwrite=overwrite,
                                 share=blocks, step=step, show_progress=not quiet)
    if stats is not None:
        log.info("%s: %s", out_uri, stats.line())
        if step in ("all", "relabel"):
            from pytc_core import save_config_next_to

            save_config_next_to(out_uri, cfg, command="pytc-decode")
    else:
        log.info("%s: step %s done for blocks %s", out_uri, step, blocks or "all")
    emit(out_uri)
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-decode", app))
