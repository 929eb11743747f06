"""The ``pytc-infer`` command: raw volume + checkpoint → affinity volume, prints its URI."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.bbox import parse_bbox
from pytc_core.cli import CommonFlags, emit, resolve_input_uri, run_entry_point
from pytc_core.errors import UserError
from pytc_infer import __version__

log = logging.getLogger("pytc.infer")

app = cyclopts.App(name="pytc-infer", version=__version__)


def _ints(text: str | None, n: int, flag: str, example: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if n == 3 and len(parts) == 1:
        parts = parts * 3
    if len(parts) != n:
        raise UserError(f"bad {flag} '{text}'", f"write it as {example}")
    return tuple(parts)


def _floats(text: str | None) -> tuple[float, ...] | None:
    """``--voxel-size``: ``8`` or ``40,8,8`` (nm, z y x)."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.replace("x", ",").split(",") if p.strip()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or not all(p > 0 for p in parts):
        raise UserError(f"bad --voxel-size '{text}'", "write it as --voxel-size 40,8,8 (nm, z,y,x)")
    return tuple(parts)


def _bbox(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    box = parse_bbox(text, "--bbox")
    return box.start + box.stop


@app.default
def infer(
    *,
    checkpoint: Annotated[str | None, Parameter(name=["--checkpoint", "-c"])] = None,
    input_: Annotated[str | None, Parameter(name=["--input", "-i"], allow_leading_hyphen=True)] = None,
    output: Annotated[str | None, Parameter(name=["--output", "-o"])] = None,
    patch: Annotated[str | None, Parameter(name="--patch")] = None,
    overlap: Annotated[float | None, Parameter(name="--overlap")] = None,
    blend: Annotated[str | None, Parameter(name="--blend")] = None,
    tta: Annotated[str | None, Parameter(name="--tta")] = None,
    dtype: Annotated[str | None, Parameter(name="--dtype")] = None,
    device: Annotated[str | None, Parameter(name="--device")] = None,
    precision: Annotated[str | None, Parameter(name="--precision")] = None,
    bbox: Annotated[str | None, Parameter(name="--bbox")] = None,
    block_size: Annotated[str | None, Parameter(name="--block-size")] = None,
    batch_size: Annotated[int | None, Parameter(name="--batch-size")] = None,
    memory_limit: Annotated[str | None, Parameter(name="--memory-limit")] = None,
    blocks: Annotated[str | None, Parameter(name="--blocks")] = None,
    weights: Annotated[str | None, Parameter(name="--weights")] = None,
    voxel_size: Annotated[str | None, Parameter(name="--voxel-size")] = None,
    allow_resolution_mismatch: Annotated[bool, Parameter(name="--allow-resolution-mismatch",
                                                         negative="")] = False,
    strict: Annotated[bool, Parameter(name="--strict", negative="")] = False,
    allow_same_file: Annotated[bool, Parameter(name="--allow-same-file", negative="")] = False,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Predict affinities (or whatever the model outputs) for a raw volume with a checkpoint.

    The volume is cut into blocks aligned to the output's chunks; each block is read with the
    halo its windows need, predicted with overlapping windows blended by a Gaussian weight,
    and written. The result equals one MONAI sliding-window pass over the whole volume;
    windows stay inside the volume (border voxels are predicted from windows shifted inward;
    a volume smaller than the patch is zero-padded). Block size and batch are planned from the
    available memory (printed). Affinities are written as probabilities (sigmoid) to a
    precomputed layer with the input's voxel size and offset, with a provenance record
    (pytc_infer.json: checkpoint hash, config, command, version) beside the data. An
    interrupted run resumes when started again; finished blocks are not recomputed.
    Prints the output URI on stdout.

    Examples::

        pytc-infer --checkpoint run.ckpt --input raw.h5:raw --output aff
        pytc-infer -c run.ckpt -i raw_layer --tta flips --dtype uint8 | pytc-decode -
        pytc-infer -c run.ckpt -i gs://lab/raw --bbox 0,0,0,256,1024,1024 --memory-limit 8GiB
        echo raw_layer | pytc-infer -c run.ckpt -i - -o aff --precision bf16
        # a PyTC v2 or BANIS checkpoint; a setting the file lacks given by hand
        pytc-infer -c banis.ckpt -i raw_layer -o aff --weights raw --set model.mednext_norm=group
        # Slurm array task I of 16 (same --output; any task may start first)
        pytc-infer -c run.ckpt -i raw_layer -o aff --block-size 256 --blocks $I/16

    Parameters
    ----------
    checkpoint
        A pytc checkpoint (``.ckpt`` written by pytc-train), a PyTC v2 or BANIS MedNeXt
        ``.ckpt`` or DKFZ MedNeXt weights; what a foreign file does not store comes from its
        tensors' shapes and ``--set model.KEY=VALUE`` (e.g. ``model.mednext_norm=layer``).
    input_
        Raw volume URI (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``, ``.npy``);
        ``-`` reads it from stdin.
    output
        Output URI (default: ``<input name>_affinities`` beside the input: the same format
        for a precomputed layer or zarr, else a precomputed layer named after the file).
    patch
        Window size in voxels, ``64`` or ``z,y,x`` (default: the checkpoint's patch size).
    overlap
        Fraction of a window shared with its neighbour, in [0, 1) (default 0.25).
    blend
        Window weight: ``gaussian`` (default, sigma 1/8 of the patch) or ``constant``.
    tta
        Test-time augmentation: ``none`` (default), ``flips`` (the 8 flips of z, y, x) or
        ``flips-xy`` (4); affinity channels are un-flipped with their offsets.
    dtype
        ``float32`` (default) or ``uint8`` (probabilities x255, 4x smaller; pytc-decode reads
        integer affinities as value/255).
    device
        ``auto`` (default: CUDA when visible), ``cpu`` or ``cuda``.
    precision
        ``32`` (default), ``bf16`` or ``16`` (autocast).
    bbox
        Predict only ``z0,y0,x0,z1,y1,x1`` (global voxels, half-open); input around it is used
        as context (half a patch).
    block_size
        Output block size in voxels (``128`` or ``z,y,x``; multiples of the 64³ chunks);
        default: planned from memory.
    batch_size
        Windows per forward pass (default: 1 on CPU, planned from GPU memory on CUDA).
    memory_limit
        Cap for the memory plan, e.g. ``8GiB`` (default: 80 % of the available memory).
    blocks
        ``i/n``: predict only task i's share of the blocks (0-based), for Slurm arrays.
    weights
        ``auto`` (default: the EMA weights where the checkpoint has them), ``raw`` or ``ema``.
    voxel_size
        The input's voxel size in nm, ``z,y,x`` (or one number), when its metadata is wrong;
        the output gets it too. Checked against the checkpoint's training voxel size.
    allow_resolution_mismatch
        Predict although the input's voxel size is more than 5 % off the training data's
        (refused by default; a multiscale input's matching level is read instead when it has one).
    strict
        Input intensities that do not fit the training data (normalised as in training) are
        an error instead of a warning.
    allow_same_file
        Let ``--output`` be another dataset of the input's own HDF5 file (refused by default:
        it grows the input's file; a separate file or a chunked format is safer).
    """
    common.setup_logging()
    from pytc_core.blocks import parse_share
    from pytc_core.cli import parse_block_size
    from pytc_core.config import resolve_config
    from pytc_infer.infer import InferConfig, run_infer

    share = parse_share(blocks) if blocks is not None else None
    cfg = resolve_config(InferConfig, common.config, {
        "checkpoint": checkpoint, "input": input_, "output": output,
        "patch": _ints(patch, 3, "--patch", "--patch 64 or --patch 32,64,64"),
        "overlap": overlap, "blend": blend, "tta": tta, "dtype": dtype, "device": device,
        "precision": precision,
        "bbox": _bbox(bbox),
        "block_size": parse_block_size(block_size),
        "batch_size": batch_size, "memory_limit": memory_limit, "weights": weights,
        "voxel_size": _floats(voxel_size),
        "allow_resolution_mismatch": allow_resolution_mismatch or None,
        "strict": strict or None,
    }, section="infer", text_overrides=common.text_overrides())
    if cfg.input == "-":
        from dataclasses import replace

        cfg = replace(cfg, input=resolve_input_uri("-"))
    result = run_infer(cfg, share=share, overwrite=common.overwrite,
                       show_progress=not common.quiet, command=" ".join(["pytc-infer", *sys.argv[1:]]),
                       allow_same_file=allow_same_file)
    log.info("%s", result.line())
    if not result.complete:
        log.info("%s: this share is done; the output is complete once every --blocks share "
                 "has run", result.output)
    emit(result.output)
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-infer", app))
