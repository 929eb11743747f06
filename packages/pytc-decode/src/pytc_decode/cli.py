"""The ``pytc-decode`` command: affinities → segmentation layer, prints the output URI.

Only parsing: flags → :class:`~pytc_decode.config.DecodeConfig`, one call of
:func:`~pytc_decode.stage.run_decode`, the summary on stderr and the URI on stdout.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import (
    CommonFlags,
    emit,
    parse_block_size,
    resolve_input_uri,
    run_entry_point,
)
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
    logits: Annotated[bool, Parameter(name="--logits", negative="")] = False,
    fill_missing: Annotated[bool, Parameter(name="--fill-missing", negative="")] = False,
    method: Annotated[str | None, Parameter(name="--method")] = None,
    agglomeration_threshold: Annotated[str | None,
                                       Parameter(name="--agglomeration-threshold")] = None,
    merge_threshold: Annotated[str | None, Parameter(name="--merge-threshold")] = None,
    block_size: Annotated[str | None, Parameter(name="--block-size")] = None,
    blocks: Annotated[str | None, Parameter(name="--blocks")] = None,
    step: Annotated[str, Parameter(name="--step")] = "all",
    allow_same_file: Annotated[bool, Parameter(name="--allow-same-file", negative="")] = False,
    fragments_only: Annotated[bool, Parameter(name="--fragments-only", negative="")] = False,
    save_fragments: Annotated[bool, Parameter(name="--save-fragments", negative="")] = False,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Segment an affinity volume by connected components of its above-threshold edges.

    The input is channels first (C, Z, Y, X): channels 0, 1, 2 are the z, y, x
    nearest-neighbour affinities (channel c at voxel v links v and v - e_c), further channels
    are long-range and ignored by CC. Two voxels are joined when their edge's affinity is
    above the threshold (6-connectivity); voxels with no such edge are background (0). Ids
    are consecutive, numbered by first voxel in C order. Writes a uint32 segmentation
    (uint64 for volumes of 2**32 voxels or more), prints its URI on stdout and a summary
    (segments, sizes, labelled voxels) on stderr.

    An existing output is replaced only with ``--overwrite``, and only when it is a volume of
    the output's format (never another file, directory, HDF5 group or zarr group); an
    interrupted run resumes when the same command is run again (see the README's conventions).

    Examples::

        pytc-decode aff_layer --output seg_layer --threshold 0.5
        pytc-decode aff.h5:aff -o seg.h5:seg --min-size 100 --small merge --dust
        pytc-decode logits.zarr --logits          # a model output without its sigmoid
        # watershed + agglomeration, one segmentation per threshold, ranked by eval
        pytc-decode aff -o seg --method ws --agglomeration-threshold 0.2,0.3,0.5 \\
          | pytc-eval - --gt labels
        pytc-infer ... | pytc-decode - --block-size 128        # larger than memory
        # Slurm array task I of 16: label shares, one reduce, relabel shares
        pytc-decode aff -o seg --block-size 128 --step label --blocks $I/16
        pytc-decode aff -o seg --block-size 128 --step reduce
        pytc-decode aff -o seg --block-size 128 --step relabel --blocks $I/16
        # fragments once, then the chosen threshold block by block
        pytc-decode aff -o frag --method ws --block-size 128 --fragments-only \
          --agglomeration-threshold 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9
        pytc-decode frag -o seg --agglomeration-threshold 0.4 --block-size 128

    Parameters
    ----------
    aff_uri
        Affinity volume URI (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``,
        ``.npy``); ``-`` reads it from stdin (one line). Float values in [0, 1], checked while
        reading (pass ``--logits`` for a model output without its sigmoid); unsigned integer
        dtypes are read as fractions of their maximum (uint8: value / 255).
    output
        Segmentation URI (default: beside the input, ``<name>_seg``).
    threshold
        ``cc``: edges with affinity strictly above this join their voxels; ``mws``: edges
        above it attract, below it repel; in [0, 1] (default 0.5). Not used by ``ws`` (and
        not part of a ``ws`` run's resume key).
    min_size
        Segments under this many voxels are removed (default 0: keep all).
    small
        What happens to segments under ``--min-size``: ``remove`` (background, default) or
        ``merge`` into the neighbour they touch most strongly (whole-volume only; ``cc`` and
        ``mws``).
    mask
        3D volume over the same box; only its non-zero voxels are segmented.
    foreground_channel
        Index of a foreground-probability channel (models with a foreground output).
    foreground_threshold
        Voxels whose foreground channel is not above this are background.
    dust
        Print a histogram of segment sizes (1, 2-9, 10-99, ... voxels: segments and share of
        the labelled voxels per bin) after the summary.
    logits
        The affinities are logits (a model output without its sigmoid): apply the sigmoid
        while reading. Without it, float values outside [0, 1] are an error.
    fill_missing
        Read missing chunks of a precomputed input as zeros (layers sparse on purpose);
        without it a missing chunk is an error naming it.
    method
        ``cc`` (default); ``ws``: seeded watershed fragments merged by mean boundary affinity
        (robust to leaking edges of an imperfect model; ``seed_threshold``, ``seed_radius``,
        ``seeds_2d``, ``merge_function``, ``quantile``, ``halo`` in the config table
        ``[decode.ws]``); or ``mws``: mutex watershed on all channels (needs the optional
        ``mwatershed`` package and ``long_range_offsets`` of the long-range channels in
        ``[decode.mws]``).
    agglomeration_threshold
        ``--method ws``: merge fragments while 1 - their mean boundary affinity is below this,
        in [0, 1] (default 0.5; higher merges more). A list ``0.2,0.3,0.5`` writes one
        segmentation per threshold from one agglomeration pass (``<output>_t0.2``, ...), each
        URI on its own stdout line.
    merge_threshold
        Deprecated spelling of ``--agglomeration-threshold`` (removed in the next release;
        pytc-eval's ``merge_threshold`` is funlib's ERL node count).
    block_size
        Decode block by block with blocks of this many voxels (``128`` or ``z,y,x``); use a
        multiple of the input's chunk size. ``cc``: the result is identical to a
        whole-volume decode. ``ws``: identical to the whole-volume decode (both compute
        fragments on the ``ws.fragment_block`` grid, default 128 per axis; blocks must be
        multiples of it, e.g. 256 or 128,256,256). ``mws``: whole volume only.
    blocks
        ``i/n``: only task i's share of the blocks (0-based), with ``--step label|relabel``.
    step
        Blockwise step: ``all`` (default), ``label``, ``reduce`` or ``relabel``. For a
        fragments input: label = each block's fragment extents, reduce = the segment tables,
        relabel = the blocks written.
    fragments_only
        ``--method ws``: write the watershed fragments (ids 1..N, 0 =
        background) and their merge history up to the largest threshold (``pytc_merges.npz``
        beside them) at the output instead of segmentations; its URI is the one stdout line.
        ``pytc-decode FRAGMENTS --agglomeration-threshold t`` then segments them at any
        threshold without the watershed (with ``--block-size B`` one block of voxels at a
        time, resumable; the same ids as the whole volume), and pytc-eval scores every
        threshold from them. Blockwise too (``--block-size``, steps and shares): the
        fragments of the block grid, so segmenting them at t gives exactly the blockwise
        decode at t.
    save_fragments
        ``--method ws``, whole volume: write the fragments and merge history
        (``<output>_fragments``, its URI the last stdout line) beside the segmentations.
    allow_same_file
        Let ``--output`` be another dataset of an input's own HDF5 file (refused by default:
        it grows the input's file; a separate file or a chunked format is safer).
    """
    common.setup_logging()
    from pytc_core.blocks import parse_share
    from pytc_core.config import resolve_config
    from pytc_decode.config import DecodeConfig
    from pytc_decode.stage import run_decode

    cfg = resolve_config(DecodeConfig, common.config, {
        "threshold": threshold, "min_size": min_size, "small": small, "mask": mask,
        "foreground_channel": foreground_channel, "foreground_threshold": foreground_threshold,
        "method": method, "block_size": parse_block_size(block_size), "logits": logits or None,
        "agglomeration_threshold": _parse_thresholds(agglomeration_threshold,
                                                     "--agglomeration-threshold"),
        "merge_threshold": _parse_thresholds(merge_threshold, "--merge-threshold"),
        "fill_missing": fill_missing or None,
        "dust": dust or None}, section="decode", text_overrides=common.text_overrides())
    from pytc_core.errors import UserError
    from pytc_core.merge_history import read_merge_history

    aff_uri = resolve_input_uri(aff_uri)
    if (len(cfg.ws.thresholds) > 1 and cfg.method != "ws"
            and read_merge_history(aff_uri) is None):
        raise UserError("several agglomeration thresholds need --method ws",
                        "add --method ws, or give one threshold")
    if fragments_only and save_fragments:
        raise UserError("--fragments-only and --save-fragments exclude each other",
                        "give one: --fragments-only writes no segmentation")
    result = run_decode(aff_uri, cfg, output=output,
                        overwrite=common.overwrite, step=step,
                        share=None if blocks is None else parse_share(blocks),
                        show_progress=not common.quiet, allow_same_file=allow_same_file,
                        fragments="only" if fragments_only else
                        "save" if save_fragments else None)
    log.info("%s", result.summary())
    if result.stats is not None and result.stats.histogram is not None:
        log.info("%s", result.stats.histogram_text())
    for uri in result.outputs:
        emit(uri)
    return 0


def _parse_thresholds(text: str | None, flag: str) -> tuple[float, ...] | None:
    """``0.5`` or ``0.2,0.3,0.5`` → floats (checked against [0, 1] by the library)."""
    if text is None:
        return None
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        from pytc_core.errors import UserError

        raise UserError(f"bad {flag} '{text}'",
                        "give numbers in [0, 1], e.g. 0.5 or 0.2,0.3,0.5") from None


def main() -> None:
    sys.exit(run_entry_point("pytc-decode", app))
