"""Inference over volumes of any size: chunk-aligned blocks, each predicted with blended
sliding windows, written, and marked done.

The run predicts the *domain*: the volume, or ``bbox`` grown by ``context`` voxels of input
on each side where the volume has them. One MONAI window grid covers the domain
(:mod:`pytc_infer.tiling`); the output (the bbox, or the whole volume) is cut into blocks
aligned to its chunks; each block reads the union of the windows that reach into it (its
halo), blends them and writes its voxels. The result equals one MONAI
``sliding_window_inference`` pass over the domain, whatever the block size. Blocks are
written on a writer thread while the next block is predicted (one write pending at most)
and marked done (``BlockProgress``) after their chunks are written, so a killed run resumes;
``share=(i, n)`` runs task i of n (Slurm arrays). Coordinates are global voxels (z, y, x).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pytc_core.bbox import BBox, Vec3, parse_bbox
from pytc_core.errors import UserError
from pytc_core.normalize import normalize_raw
from pytc_core.volume import Volume, sidecar_path
from pytc_core.volume.naming import default_output_uri as core_default_output_uri
from pytc_core.volume.padded import read_padded

__all__ = ["InferConfig", "InferResult", "default_output_uri", "predict", "predict_volume",
           "run_infer"]

log = logging.getLogger("pytc.infer")

PROVENANCE = "pytc_infer.json"
DEFAULT_PATCH = (64, 64, 64)


@dataclass(frozen=True)
class InferConfig:
    """Options of ``pytc-infer`` (TOML table ``[infer]`` or a whole file). Sizes in voxels
    (z, y, x); ``bbox`` is ``z0, y0, x0, z1, y1, x1`` in global voxels, half-open."""

    checkpoint: str = ""
    input: str = ""
    output: str | None = None
    #: window size; default: the checkpoint's ``data.patch_size``, else 64³
    patch: tuple[int, int, int] | None = None
    #: fraction of a window shared with its neighbour, in [0, 1)
    overlap: float = 0.25
    blend: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = 0.125
    tta: Literal["none", "flips", "flips-xy"] = "none"
    dtype: Literal["float32", "uint8"] = "float32"
    device: str = "auto"
    precision: Literal["32", "bf16", "16"] = "32"
    #: output block size (multiples of the chunk size); default: planned from memory
    block_size: tuple[int, int, int] | None = None
    batch_size: int | None = None
    #: cap for the memory plan, e.g. "8GiB"; default 80 % of the available memory
    memory_limit: str | None = None
    bbox: tuple[int, int, int, int, int, int] | None = None
    #: input voxels used beyond the bbox on each side (default: half the patch)
    context: tuple[int, int, int] | None = None
    #: output chunk size (default 64³, capped by the output's shape)
    chunk_size: tuple[int, int, int] | None = None
    #: checkpoint weights: ``auto`` (EMA where the checkpoint has them), ``raw`` or ``ema``
    weights: Literal["auto", "raw", "ema"] = "auto"
    #: ``[model]`` keys a foreign checkpoint (PyTC v2, BANIS) does not store, e.g.
    #: ``mednext_norm = "layer"``; checked against what the checkpoint does store
    model: dict[str, Any] = field(default_factory=dict)
    #: the input's voxel size (nm, z y x) when its metadata is wrong; default: the metadata
    voxel_size: tuple[float, float, float] | None = None
    #: predict although the input's voxel size differs from the training data's
    allow_resolution_mismatch: bool = False
    #: input intensities that do not fit the training data are an error, not a warning
    strict: bool = False


@dataclass(frozen=True)
class InferResult:
    """What a run did: output, its shape, blocks planned/skipped/processed, windows
    computed now and in the whole grid, the memory plan and the wall time (s)."""

    output: str
    shape: tuple[int, ...]
    planned: int
    skipped: int
    processed: int
    windows: int
    grid_windows: int
    plan: str
    seconds: float
    complete: bool

    def line(self) -> str:
        z, y, x = self.shape[-3:]
        return (f"{self.output}: {self.shape[0]} channels over {z}x{y}x{x} voxels; "
                f"{self.processed} blocks predicted ({self.windows} windows), "
                f"{self.skipped} already done, in {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------
# helpers


def default_output_uri(in_uri: str) -> str:
    """Where the prediction goes without ``--output``: beside the input, ``<name>_affinities``
    (:func:`pytc_core.volume.naming.default_output_uri`: ``dir/raw.h5:raw`` →
    ``dir/raw_affinities``, a precomputed layer; ``x.zarr`` → ``x_affinities.zarr``)."""
    return core_default_output_uri(in_uri, "_affinities")


def _check_bbox(bbox: Sequence[int] | None, vol: Volume) -> BBox:
    """The box to predict: ``bbox`` (checked, inside ``vol``) or the whole volume."""
    if bbox is None:
        return vol.bbox
    box = parse_bbox(bbox, "--bbox")
    if not vol.bbox.contains(box):
        raise UserError(f"bbox {tuple(bbox)} lies outside {vol.uri} (extent "
                        f"{vol.bbox.start + vol.bbox.stop})", "pass a box inside the volume")
    return box


def _domain(box: BBox, volume: BBox, context: Sequence[int], patch: Sequence[int]) -> BBox:
    """``box`` grown by ``context`` and, where shorter than the patch, to the patch, within
    ``volume``."""
    grown = box.grow(tuple(context)).intersect(volume)
    start, stop = list(grown.start), list(grown.stop)
    for a in range(3):
        short = patch[a] - (stop[a] - start[a])
        if short > 0:
            start[a] = max(volume.start[a], start[a] - short // 2)
            stop[a] = min(volume.stop[a], start[a] + patch[a])
            start[a] = max(volume.start[a], stop[a] - patch[a])
    return BBox(tuple(start), tuple(stop))


def _check_config(cfg: InferConfig) -> None:
    if not 0.0 <= cfg.overlap < 1.0:  # also NaN
        raise UserError(f"overlap {cfg.overlap} is outside [0, 1)", "use e.g. --overlap 0.25")
    for name in ("patch", "block_size", "chunk_size"):
        value = getattr(cfg, name)
        if value is not None and any(v <= 0 for v in value):
            raise UserError(f"{name.replace('_', ' ')} {value} must be positive",
                            f"give three positive voxel counts, e.g. --{name.replace('_', '-')} 64")
    if cfg.context is not None and any(v < 0 for v in cfg.context):
        raise UserError(f"context {cfg.context} is negative", "give voxels >= 0")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UserError(f"batch size {cfg.batch_size} must be >= 1", "e.g. --batch-size 2")
    if not cfg.sigma_scale > 0:
        raise UserError(f"sigma scale {cfg.sigma_scale} must be positive", "e.g. 0.125")


def _validate_patch(model_config: dict[str, Any], patch: Vec3) -> bool:
    """Check ``patch`` with the zoo's rule when pytc_core has one; False when it has none."""
    from pytc_core import models

    validate = getattr(models, "validate_input_size", None)
    if validate is None:
        return False
    validate(model_config, patch)
    return True


def _output_chunk(cfg: InferConfig, shape: Vec3) -> Vec3:
    """The output's chunk size: ``chunk_size``, else 64 per axis (or the block size when
    that is under 64 or not a multiple of 64), capped by the output's shape."""
    chunk: Sequence[int]
    if cfg.chunk_size is not None:
        chunk = cfg.chunk_size
    elif cfg.block_size is not None:
        chunk = [b if b < 64 or b % 64 else 64 for b in cfg.block_size]
    else:
        chunk = (64, 64, 64)
    z, y, x = (min(c, s) for c, s in zip(chunk, shape, strict=True))
    return (z, y, x)


def _provenance_path(out_uri: str) -> Path | None:
    return sidecar_path(out_uri, PROVENANCE)


def _read_provenance(out_uri: str) -> dict[str, Any] | None:
    path = _provenance_path(out_uri)
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _claim_provenance(out_uri: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write the provenance record unless one exists (atomically, first writer wins, so
    concurrent array tasks agree on one block size); return the record that holds."""
    path = _provenance_path(out_uri)
    if path is None:
        return record
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


def _check_existing(out_uri: str, key: str, key_fields: dict[str, Any],
                    previous: dict[str, Any] | None, in_uri: str, *, join: bool = False) -> None:
    """UserError (saying what would be resumed) for an existing output this run may not
    continue without --overwrite. ``join``: a share of a blockwise run, for which an output
    this run's other shares have just finished is not an error."""
    from pytc_core.output import inspect_output
    from pytc_core.output_run import read_run_record

    old = (previous or {}).get("key", {})
    if previous is not None and old != key_fields and (
            old.get("checkpoint_sha256") == key_fields["checkpoint_sha256"]
            and old.get("input") == in_uri):
        changed = sorted(k for k, v in key_fields.items() if old.get(k) != v)
        raise UserError(f"output {out_uri} exists from the same checkpoint and input with "
                        f"other settings ({', '.join(changed)})",
                        "rerun with the same settings to resume it, pass --overwrite to "
                        "replace it, or choose another --output")
    state = inspect_output(out_uri)
    if state.kind != "volume":
        return  # absent (or foreign: claim_output refuses it)
    record = read_run_record(out_uri)
    if record is None or record.key != key:
        raise UserError(f"output {out_uri} already exists ({state.what}; not an unfinished "
                        "prediction of this checkpoint and input, which would be resumed)",
                        "pass --overwrite to replace it, or choose another --output")
    if record.complete and not join:
        raise UserError(f"output {out_uri} already exists (a finished prediction of this "
                        "checkpoint and input)",
                        "pass --overwrite to predict it again, or choose another --output")


def _finished_by_this_run(out_uri: str, key: str) -> bool:
    """Whether the output at ``out_uri`` is complete and was written by a run of ``key``."""
    from pytc_core.output import inspect_output
    from pytc_core.output_run import read_run_record

    if inspect_output(out_uri).kind != "volume":
        return False
    record = read_run_record(out_uri)
    return record is not None and record.complete and record.key == key


def _finish_provenance(out_uri: str, record: dict[str, Any]) -> None:
    path = _provenance_path(out_uri)
    if path is not None:
        from pytc_core.files import write_atomic

        write_atomic(path, json.dumps({**record, "complete": True}, indent=1,
                                      default=str).encode())


# ---------------------------------------------------------------------------------------
# the Python API for arrays


def predict(model, array: np.ndarray, patch: Sequence[int] = DEFAULT_PATCH,
            overlap: float = 0.25, *, blend: str = "gaussian", sigma_scale: float = 0.125,
            batch_size: int = 1, activation: str = "sigmoid", tta: str = "none",
            offsets: Sequence[Sequence[int] | None] | None = None, precision: str = "32",
            device: str | None = None) -> np.ndarray:
    """Predict a whole in-memory array with blended sliding windows (for notebooks).

    ``array`` is (Z, Y, X) or (C, Z, Y, X) raw (integers scaled to [0, 1] by their dtype's
    maximum, floats as they are); ``model`` a torch module (N, C_in, *patch) →
    (N, C_out, *patch). Returns (C_out, Z, Y, X) float32 with ``activation`` (``sigmoid`` or
    ``none``) applied per window, equal to MONAI ``sliding_window_inference`` with the same
    patch, overlap and blend mode. ``tta``: ``none``, ``flips`` or ``flips-xy``, with
    ``offsets`` the affinity offset per channel (default: nearest-neighbour z, y, x).
    ``device``: where the windows run (default: the model's device); the model is moved there.
    """
    from pytc_infer.predictor import NEAREST, make_forward
    from pytc_infer.tiling import blend_windows, importance_map, window_grid
    from pytc_infer.tta import tta_forward

    array = np.asarray(array)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"array must be (Z, Y, X) or (C, Z, Y, X), got shape {array.shape}")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = str(param.device) if param is not None else "cpu"
    else:
        model.to(device)  # a CPU model with device="cuda" would fail on its first window
    box = BBox.from_shape(array.shape[1:])
    grid = window_grid(box, patch, overlap)
    span = grid.input_box(box)
    image = np.zeros((array.shape[0], *span.shape), dtype=np.float32)
    image[(slice(None), *box.relative_to(span.start))] = normalize_raw(array)
    forward = make_forward(model, activation=activation, precision=precision, device=device)
    forward = tta_forward(forward, tta, NEAREST if offsets is None else offsets)
    return blend_windows(forward, image, span, grid, box,
                         importance_map(grid.patch, blend, sigma_scale),
                         batch_size=batch_size, device=device)


# ---------------------------------------------------------------------------------------
# volumes


def run_infer(cfg: InferConfig, *, share: tuple[int, int] | None = None, overwrite: bool = False,
              show_progress: bool = True, command: str | None = None,
              write_behind: bool = True, allow_same_file: bool = False) -> InferResult:
    """Predict ``cfg.input`` with ``cfg.checkpoint`` into ``cfg.output`` block by block.

    Every check on the input happens before anything is written (UserError). An existing
    output written by the same checkpoint from the same input with the same settings is
    resumed (finished blocks are skipped); anything else needs ``overwrite``. With
    ``share=(i, n)`` only task i's blocks are predicted; the output is marked complete when
    every block is done. Each block is written on a writer thread while the next one is
    predicted (``write_behind``; False writes it before the next starts, for benchmarks) and
    marked done once written; the next block's input is read ahead. An output in the input's
    own HDF5 file (another dataset) is refused unless ``allow_same_file``; shares never write
    a single-file output (HDF5, TIFF, ``.npy``).
    """
    t0 = time.perf_counter()
    _check_config(cfg)
    if not cfg.checkpoint:
        raise UserError("no checkpoint given", "pass --checkpoint run.ckpt")
    if not cfg.input:
        raise UserError("no input volume given", "pass --input RAW_URI")
    if share is not None and cfg.output:
        from pytc_core.output import check_shareable

        check_shareable(cfg.output)
    from pytc_core.output_run import open_input

    vol = open_input(cfg.input)
    box = _check_bbox(cfg.bbox, vol)
    if not Path(cfg.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {cfg.checkpoint}", "check the --checkpoint path")

    import torch

    from pytc_core.memory import memory_budget
    from pytc_core.models import load_model_from_checkpoint
    from pytc_infer.memory import (
        estimate_activation_bytes,
        format_bytes,
        parse_bytes,
        plan_memory,
    )
    from pytc_infer.predictor import (
        check_offsets,
        checkpoint_settings,
        file_sha256,
        make_forward,
        resolve_device,
    )
    from pytc_infer.tiling import blend_windows, importance_map, window_grid
    from pytc_infer.tta import tta_forward

    device = resolve_device(cfg.device)
    model, full_config = load_model_from_checkpoint(cfg.checkpoint, map_location=device,
                                                    model=cfg.model, weights=cfg.weights)
    source = full_config.get("source")
    if isinstance(source, dict):
        log.info("%s: a %s checkpoint, %s weights, model %s", cfg.checkpoint, source["layout"],
                 source["weights"], full_config["model"].get("architecture"))
    settings = checkpoint_settings(full_config)
    normalization = settings.normalization
    check_offsets(settings.offsets, settings.out_channels)
    in_channels = vol.num_channels or 1
    if in_channels != settings.in_channels:
        raise UserError(f"{vol.uri} has {in_channels} channel(s) (shape {vol.shape}); the model "
                        f"of {cfg.checkpoint} takes {settings.in_channels}",
                        "pass the raw volume the model was trained on")
    from pytc_infer.contract import check_input, contract_of, note_no_contract

    if cfg.voxel_size is not None and (len(cfg.voxel_size) != 3
                                       or not all(v > 0 for v in cfg.voxel_size)):
        raise UserError(f"bad voxel size {cfg.voxel_size}", "give 3 positive nm values, z,y,x")
    contract = contract_of(full_config, cfg.checkpoint)
    checked_input = check_input(vol, contract,
                                open_level=open_input, voxel_size=cfg.voxel_size,
                                allow_mismatch=cfg.allow_resolution_mismatch, strict=cfg.strict,
                                box=box)
    if checked_input.level_chosen:
        if cfg.bbox is not None:
            raise UserError(f"--bbox is in the voxels of {cfg.input}, but its level "
                            f"{checked_input.volume.uri} is read (it matches the training "
                            "voxel size)", "pass that level as --input and the bbox in its voxels")
        vol = checked_input.volume
        box = vol.bbox
        cfg = replace(cfg, input=vol.uri)
    patch: Vec3 = tuple(cfg.patch or settings.patch or DEFAULT_PATCH)  # type: ignore[assignment]
    checked = _validate_patch(full_config["model"], patch)
    context = cfg.context if cfg.context is not None else tuple(p // 2 for p in patch)
    domain = _domain(box, vol.bbox, context, patch)
    grid = window_grid(domain, patch, cfg.overlap)
    weight = importance_map(patch, cfg.blend, cfg.sigma_scale)

    # memory: budget, window activations, block plan (nothing written yet)
    if cfg.memory_limit:
        budget = parse_bytes(cfg.memory_limit)
        log.debug("memory budget: %s (--memory-limit)", format_bytes(budget))
    else:
        host = memory_budget()
        budget = int(0.8 * host.available)
        log.debug("memory budget: %s, 80 %% of %s", format_bytes(budget), host.line())
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info()
        budget = min(budget, int(0.8 * free)) if not cfg.memory_limit else budget
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        window_bytes = estimate_activation_bytes(model, in_channels, patch, device)
        if not checked:  # no size rule in the zoo: try the patch itself once
            with torch.inference_mode():
                y = model(torch.zeros((1, in_channels, *patch), device=device))
            if tuple(y.shape[2:]) != patch:
                raise UserError(f"the model maps a {patch} patch to {tuple(y.shape[2:])}",
                                "pytc-infer needs models whose output has the input's size")
    except UserError:
        raise
    except (RuntimeError, ValueError) as exc:
        # ValueError: e.g. MedNeXt's GroupNorm on a 16³ window, 1 voxel at its bottleneck
        raise UserError(f"the model of {cfg.checkpoint} cannot take patch {patch} "
                        f"({str(exc).splitlines()[0][:120]})",
                        "choose a --patch the architecture accepts (MedNeXt and U-Nets: "
                        "multiples of 16; MedNeXt needs at least 32 along two axes, e.g. "
                        "--patch 16,32,32)") from None
    if cfg.tta != "none":
        window_bytes *= 2
    out_dtype = np.dtype(np.uint8 if cfg.dtype == "uint8" else np.float32)
    out_shape = (settings.out_channels, *box.shape)
    chunk = _output_chunk(cfg, box.shape)
    if cfg.block_size is not None:
        bad = [b for b, c, n in zip(cfg.block_size, chunk, box.shape, strict=True)
               if b % c and b < n]
        if bad:
            raise UserError(f"block size {cfg.block_size} is not a multiple of the output chunk "
                            f"size {chunk}", "use multiples of the chunk size (64 by default)")

    # the output: claimed (checks, lease, run record) before any input data is read
    out_uri = cfg.output or default_output_uri(cfg.input)
    key_fields = {
        "checkpoint_sha256": file_sha256(cfg.checkpoint), "input": cfg.input,
        "bbox": list(box.start + box.stop), "patch": list(patch), "overlap": cfg.overlap,
        "blend": cfg.blend, "sigma_scale": cfg.sigma_scale, "tta": cfg.tta, "dtype": cfg.dtype,
        "precision": cfg.precision, "context": list(context), "chunk": list(chunk)}
    if cfg.weights != "auto" or cfg.model:  # only then: earlier runs keep their keys
        key_fields.update(weights=cfg.weights, model=dict(sorted(cfg.model.items())))
    if cfg.voxel_size is not None:  # the output's voxel size
        key_fields["voxel_size"] = list(checked_input.voxel_size)
    if overwrite and share is not None:
        raise UserError("--overwrite with --blocks would let every array task delete the "
                        "others' blocks", "delete the old output once before starting the array")
    from pytc_core.output_run import claim_output, run_key

    key = run_key("infer", [cfg.input], key_fields)
    previous = _read_provenance(out_uri)

    def late_share() -> InferResult | None:
        """A late share (the other array tasks finished every block): nothing to do, not an
        error."""
        if share is None or not _finished_by_this_run(out_uri, key):
            return None
        log.info("%s is complete (every block predicted by this run's shares)", out_uri)
        return InferResult(out_uri, out_shape, 0, 0, 0, 0, grid.count, "the run is complete",
                           time.perf_counter() - t0, True)

    if (late := late_share()) is not None:
        return late
    if not overwrite:
        _check_existing(out_uri, key, key_fields, previous, cfg.input, join=share is not None)
    block_size = cfg.block_size
    if previous is not None and previous.get("key") == key_fields and block_size is None:
        block_size = tuple(previous["block_size"])  # resume with the plan of the first run
    plan = plan_memory(box, grid, chunk, in_channels=in_channels,
                       in_itemsize=vol.dtype.itemsize, out_channels=settings.out_channels,
                       out_itemsize=out_dtype.itemsize, model_bytes=model_bytes,
                       window_bytes=window_bytes, budget=budget, block_size=block_size,
                       batch_size=cfg.batch_size, cuda=device.startswith("cuda"))
    from pytc_core import __version__ as core_version
    from pytc_core.blocks import BlockProgress, plan_blocks, run_blocks
    from pytc_core.cli import progress_counter
    from pytc_infer import __version__

    record: dict[str, Any] = {
        "key": key_fields, "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "block_size": list(plan.block_size), "output_channels": settings.out_channels,
        "offsets": [list(o) if o is not None else None for o in settings.offsets],
        "activation": settings.activation, "config": asdict(cfg),
        "checkpoint_config": full_config,
        "command": command if command is not None else " ".join(sys.argv),
        "pytc_infer_version": __version__, "pytc_core_version": core_version,
        "complete": False}
    with claim_output(out_uri, stage="infer", key=key, inputs=[cfg.input], overwrite=overwrite,
                      join=share is not None, command=command,
                      allow_same_file=allow_same_file) as run:
        if (late := late_share()) is not None:  # finished between the checks and the claim
            return late
        record = _claim_provenance(out_uri, record)
        planned = record["block_size"]
        if tuple(planned) != plan.block_size:  # another array task planned first
            plan = replace(plan, block_size=(int(planned[0]), int(planned[1]), int(planned[2])))
        if contract is None:  # after every check: a bad input stays one line
            note_no_contract(cfg.checkpoint)
        log.info("plan: %s; %d windows over %s (patch %s, overlap %g)%s", plan.line(),
                 grid.count, domain, "x".join(map(str, patch)), cfg.overlap,
                 "; resuming" if run.resuming else "")
        out = run.create(out_shape, out_dtype, voxel_size=checked_input.voxel_size, offset=box.start,
                         chunk_size=chunk, layer_type="image")
        blocks = plan_blocks(box, plan.block_size)
        markers_dir = sidecar_path(out_uri, "pytc_progress")
        done = (BlockProgress(markers_dir, key) if markers_dir is not None else None)

        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True
        forward = make_forward(model, activation=settings.activation, precision=cfg.precision,
                               device=device, channels=settings.out_channels)
        forward = tta_forward(forward, cfg.tta, settings.offsets)
        windows = 0

        def read(block: BBox) -> tuple[BBox, np.ndarray]:
            # the raw voxels only: the block read ahead holds 1 byte a voxel (uint8), not 4
            span = grid.input_box(block)
            raw = read_padded(vol, span)
            return span, raw if raw.ndim == 4 else raw[None]

        def process(block: BBox, data: tuple[BBox, np.ndarray]) -> np.ndarray:
            nonlocal windows
            span, raw = data
            image = normalize_raw(raw, normalization)
            windows += len(grid.windows_in(block))
            pred = blend_windows(forward, image, span, grid, block, weight,
                                 batch_size=plan.batch_size, device=device)
            check_finite(pred, block)  # before any cast: NaN must never become a number
            return pred

        def write(block: BBox, pred: np.ndarray) -> None:
            if out_dtype == np.uint8:
                pred = np.clip(np.rint(pred * 255.0), 0, 255).astype(np.uint8)
            out.write(pred, offset=block.start)
            run.made_progress()

        if write_behind:  # the writer thread writes a block while the next one is computed
            result = run_blocks(blocks, process, done=done, share=share, read=read,
                                write=write, description="infer blocks",
                                progress=progress_counter if show_progress else None,
                                show_voxels=True)
        else:
            result = run_blocks(blocks, lambda b, d: write(b, process(b, d)), done=done,
                                share=share, read=read, description="infer blocks",
                                progress=progress_counter if show_progress else None,
                                show_voxels=True)
        complete = done is None or not done.pending(blocks)
        if complete:
            _finish_provenance(out_uri, record)
            from pytc_core.config import save_config_next_to

            save_config_next_to(out_uri, replace(cfg, output=out_uri), command="pytc-infer")
            run.complete()
    return InferResult(out_uri, out.shape, result.planned, result.skipped, result.processed,
                       windows, grid.count, plan.line(), time.perf_counter() - t0, complete)


def check_finite(pred: np.ndarray, block: BBox) -> None:
    """UserError naming ``block`` (voxels, z, y, x) when the prediction ``pred`` (C, Z, Y, X)
    holds NaN or ±inf: a cast to uint8 would turn NaN into 0, a cut edge."""
    finite = np.isfinite(pred)
    if finite.all():
        return
    bad = ~finite
    channels = [int(c) for c in np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))]
    nan = int(np.isnan(pred).sum())
    raise UserError(f"the model predicted non-finite values in block {block} (z, y, x voxels): "
                    f"{nan} NaN, {int(bad.sum()) - nan} inf in channel(s) "
                    f"{', '.join(map(str, channels))}; that block was not written",
                    "check the checkpoint (did its training diverge?) and the input's "
                    "normalisation, or try --precision 32")


def predict_volume(checkpoint: str, in_uri: str, out_uri: str | None = None, *,
                   overwrite: bool = False, show_progress: bool = False,
                   **options: Any) -> InferResult:
    """Predict the volume at ``in_uri`` with ``checkpoint`` into ``out_uri`` (Python API of
    ``pytc-infer``); ``options`` are :class:`InferConfig` fields (``patch``, ``overlap``,
    ``tta``, ``dtype``, ``bbox``, ``block_size``, ...)."""
    cfg = InferConfig(checkpoint=str(checkpoint), input=in_uri, output=out_uri, **options)
    return run_infer(cfg, overwrite=overwrite, show_progress=show_progress,
                     command=f"predict_volume({checkpoint!r}, {in_uri!r}, {out_uri!r})")
