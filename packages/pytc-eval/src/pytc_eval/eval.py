"""One run of pytc-eval: score segmentations against a ground truth (:func:`run_eval`).

The stage template: :class:`EvalConfig` is the resolved config (TOML table ``[eval]``,
flags, ``--set``), :func:`run_eval` does the whole job and returns an :class:`EvalReport`;
the command line only parses flags into the config, calls it and prints the report.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytc_core.bbox import BBox, parse_bbox
from pytc_core.errors import UserError
from pytc_core.memory import cube_edge, memory_budget
from pytc_core.timing import PhaseTimer
from pytc_core.volume import Volume
from pytc_eval.links import LinkSettings
from pytc_eval.report import SegmentationReport, format_table, ranked_table
from pytc_eval.skeletons import KimimaroParams

if TYPE_CHECKING:
    from pytc_eval.score import Evaluation
    from pytc_eval.skeletons import Skeletons

__all__ = ["EvalConfig", "EvalReport", "run_eval"]

log = logging.getLogger("pytc.eval")


@dataclass(frozen=True)
class EvalConfig:
    """Options of ``pytc-eval`` (TOML table ``[eval]``, or a whole file of them)."""

    #: ground-truth skeletons (JSON, SWC, precomputed layer) or ``kimimaro``; None: no ERL
    skeletons: str | None = None
    #: nodes a (skeleton, segment) pair needs to count for merges (1 = funlib)
    merge_threshold: int = 1
    #: the same for ``adapted_erl`` / ``adapted_nerl``
    adapted_merge_threshold: int = 5
    #: voxels read at a time (z, y, x); one number means a cube; default: 256³, smaller when
    #: the memory budget (cgroup, Slurm) is too small for it
    block_size: tuple[int, int, int] | None = None
    #: voxel size (nm, z y x) of every volume, overriding their metadata
    voxel_size: tuple[float, float, float] | None = None
    #: score only this box: z0, y0, x0, z1, y1, x1 in global voxels (half-open)
    bbox: tuple[int, int, int, int, int, int] | None = None
    #: read missing chunks of precomputed inputs as zeros (layers sparse on purpose)
    fill_missing: bool = False
    #: processes for kimimaro's blocks and for scoring several segmentations at once;
    #: None: the cores this process may use
    workers: int | None = None
    kimimaro: KimimaroParams = field(default_factory=KimimaroParams)
    neuroglancer: LinkSettings = field(default_factory=LinkSettings)


@dataclass(frozen=True)
class EvalReport:
    """What one run of :func:`run_eval` found and wrote."""

    ground_truth: str
    #: one report per segmentation, in the order given
    segmentations: tuple[SegmentationReport, ...]
    #: where the skeletons came from, None without skeletons
    skeletons: str | None = None
    #: the errors CSV written (None: none asked for) and its number of rows
    errors_path: str | None = None
    n_errors: int = 0
    #: folder a local file server must serve for the errors CSV's links, and its address
    serve_root: str | None = None
    #: seconds spent per phase, in order
    timings: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """The segmentations ranked (by NERL with skeletons, else by VOI) as a text table."""
        return format_table(*ranked_table(self.segmentations))


def _is_errors_csv(path: Path) -> bool:
    """Whether ``path`` is an errors table pytc-eval wrote (its header line)."""
    from pytc_eval.links import ERROR_COLUMNS, OLD_ERROR_COLUMNS

    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() in (",".join(ERROR_COLUMNS), ",".join(OLD_ERROR_COLUMNS))
    except OSError:
        return False


def _is_skeleton_json(path: Path) -> bool:
    """Whether ``path`` is a skeleton node/edge list as ``--save-skeletons`` writes it."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) == {"nodes", "edges"}


def _check_outputs(errors: str | None, save_skeletons: str | None, overwrite: bool,
                   inputs: Sequence[str | None]) -> None:
    """The output files' checks, before any input is read (see check_file_target)."""
    from pytc_core.output import check_file_target

    targets = [(errors, "the --errors CSV", _is_errors_csv),
               (save_skeletons, "the --save-skeletons JSON", _is_skeleton_json)]
    paths = []
    for path, what, recognise in targets:
        if path is not None:
            paths.append(check_file_target(path, overwrite=overwrite, what=what, inputs=inputs,
                                           recognise=recognise))
    if len(paths) == 2 and paths[0] == paths[1]:
        raise UserError(f"--errors and --save-skeletons both name {errors}",
                        "give them different files")


def _hull(boxes: Sequence[BBox]) -> BBox:
    z0, y0, x0 = (min(b.start[i] for b in boxes) for i in range(3))
    z1, y1, x1 = (max(b.stop[i] for b in boxes) for i in range(3))
    return BBox((z0, y0, x0), (z1, y1, x1))


def _planned_block_size(gt: Volume, segs: Sequence[Volume],
                        parallel: int = 1) -> tuple[int, int, int]:
    """256³ blocks, or the largest smaller cube whose segmentation and ground truth (three
    copies each while a block is scored, in each of ``parallel`` processes) fit in half the
    memory budget."""
    budget = memory_budget()
    per_voxel = 3 * (gt.dtype.itemsize + max(s.dtype.itemsize for s in segs))
    edge = cube_edge(budget.available // (2 * max(parallel, 1)), per_voxel)
    log.debug("memory budget: %s; blocks of %d³ voxels", budget.line(), edge)
    return (edge, edge, edge)


def _score_one(seg_uri: str, gt_uri: str, fill_missing: bool, skel: Skeletons | None,
               box: BBox, score_args: dict[str, Any]) -> Evaluation:
    """One segmentation scored in a worker process, which opens both volumes itself."""
    from pytc_core.output_run import open_input
    from pytc_eval.score import evaluate_volumes

    seg = open_input(seg_uri, fill_missing=fill_missing)
    gt = open_input(gt_uri, fill_missing=fill_missing)
    return evaluate_volumes(seg, gt, skel, box=box, show_progress=False, **score_args)


def _score_in_pool(seg_uris: Sequence[str], gt_uri: str, fill_missing: bool,
                   skel: Skeletons | None, boxes: Sequence[BBox], score_args: dict[str, Any],
                   processes: int) -> list[Evaluation]:
    """Score several segmentations at once, one per process (results in the order given)."""
    from concurrent.futures import ProcessPoolExecutor

    from pytc_eval.skeleton_blocks import pool_context

    with ProcessPoolExecutor(processes, mp_context=pool_context()) as pool:
        futures = [pool.submit(_score_one, uri, gt_uri, fill_missing, skel, box, score_args)
                   for uri, box in zip(seg_uris, boxes, strict=True)]
        return [f.result() for f in futures]


def run_eval(segmentations: Sequence[str], ground_truth: str, config: EvalConfig = EvalConfig(),
             *, errors: str | None = None, save_skeletons: str | None = None,
             overwrite: bool = False, show_progress: bool = False,
             raw: str | None = None) -> EvalReport:
    """Score each segmentation URI against the ground-truth URI.

    Volumes are aligned by global coordinates: each segmentation is scored on the
    intersection of its box and the ground truth's (cut to ``config.bbox``), and the report
    records that box; different voxel sizes and boxes that do not overlap are UserErrors.
    Skeletons (``config.skeletons``) are loaded once, or computed with kimimaro from the
    ground truth inside the boxes scored; ``save_skeletons`` writes them as JSON, ``errors``
    writes every merge and split as CSV (existing files need ``overwrite``), each row with
    the ``pytc-eval view`` command that opens it (with ``raw``, the raw EM volume, as a layer).
    Nothing is written before every input has been checked.
    """
    from pytc_core.blocks import plan_blocks
    from pytc_core.config import config_to_toml
    from pytc_core.files import write_atomic
    from pytc_core.output_run import open_input
    from pytc_core.volume import require_integer_labels
    from pytc_eval.align import check_voxel_sizes, evaluation_box
    from pytc_eval.links import error_rows, errors_csv, serve_root, view_command
    from pytc_eval.score import evaluate_volumes
    from pytc_eval.skeleton_blocks import default_workers, skeletonize_blockwise
    from pytc_eval.skeletons import load_skeletons, node_voxels
    from pytc_eval.skeletons import save_skeletons as save_skeletons_json

    log.debug("resolved config:\n%s", config_to_toml(config).rstrip())
    if not segmentations:
        raise UserError("no segmentation to evaluate", "give at least one segmentation URI")
    skeleton_file = (config.skeletons if config.skeletons not in (None, "kimimaro")
                     and "://" not in str(config.skeletons) else None)
    _check_outputs(errors, save_skeletons, overwrite,
                   [ground_truth, *segmentations, skeleton_file, raw])
    workers = default_workers() if config.workers is None else config.workers
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1", "give 1 or more processes")
    timer = PhaseTimer(log=log)
    with timer.phase("open and check volumes"):
        gt = open_input(ground_truth, fill_missing=config.fill_missing)
        require_integer_labels(gt)
        segs = [open_input(uri, fill_missing=config.fill_missing) for uri in segmentations]
        for seg in segs:
            require_integer_labels(seg)
        voxel_size = check_voxel_sizes(gt, segs, config.voxel_size)
        raw_vol = open_input(raw) if raw is not None else None
        if raw_vol is not None and config.voxel_size is None and not all(
                abs(a - b) < 1e-6 for a, b in zip(raw_vol.voxel_size, gt.voxel_size, strict=True)):
            raise UserError(f"--raw {raw} has voxel size {tuple(raw_vol.voxel_size)} nm but the "
                            f"ground truth {tuple(gt.voxel_size)} nm",
                            "give the raw EM volume the ground truth was traced on")
        user_box = parse_bbox(config.bbox, "--bbox") if config.bbox is not None else None
        boxes = [evaluation_box(seg, gt, user_box) for seg in segs]
    for seg, box in zip(segs, boxes, strict=True):
        if seg.bbox != gt.bbox or user_box is not None:
            log.info("%s: scored on %s (global voxels z, y, x): the intersection of its box "
                     "%s, the ground truth's %s%s", seg.uri, box, seg.bbox, gt.bbox,
                     f" and --bbox {user_box}" if user_box is not None else "")
        if user_box is None and box != gt.bbox:
            log.warning("%s: %d of the ground truth's %d voxels lie outside the segmentation "
                        "and are not scored", seg.uri, gt.bbox.size - box.size, gt.bbox.size)

    skel = None
    if config.skeletons is not None:
        with timer.phase("skeletons"):
            if config.skeletons == "kimimaro":
                region = _hull(boxes)
                log.info("skeletonizing %s in %s with kimimaro (blocks of %s³ voxels, "
                         "%d processes)", gt.uri, region, config.kimimaro.block or "all",
                         workers)
                skel = skeletonize_blockwise(ground_truth, region, voxel_size, config.kimimaro,
                                             block=config.kimimaro.block, workers=workers,
                                             fill_missing=config.fill_missing)
            else:
                skel = load_skeletons(config.skeletons, voxel_size=voxel_size)
                node_voxels(skel, gt.spatial_shape, gt.offset)  # nodes outside: UserError
            log.info("%d skeletons, %d nodes, %d edges", skel.num_skeletons, skel.num_nodes,
                     skel.num_edges)
        if save_skeletons:
            save_skeletons_json(skel, save_skeletons)

    parallel = min(workers, len(segs))
    block_size = config.block_size or _planned_block_size(gt, segs, parallel)
    score_args: dict[str, Any] = dict(
        voxel_size=voxel_size, merge_threshold=config.merge_threshold,
        adapted_merge_threshold=config.adapted_merge_threshold, block_size=block_size,
        skeleton_source=config.skeletons)
    for seg, box in zip(segs, boxes, strict=True):
        log.debug("%s: %d blocks of %s voxels over %s", seg.uri,
                  len(plan_blocks(box, block_size, grid_origin=gt.offset)), block_size, box)
    if parallel > 1:
        with timer.phase(f"scoring {len(segs)} segmentations in {parallel} processes"):
            evaluations = _score_in_pool(segmentations, ground_truth, config.fill_missing,
                                         skel, boxes, score_args, parallel)
    else:
        evaluations = []
        for seg, box in zip(segs, boxes, strict=True):
            with timer.phase(f"scoring {seg.uri}"):
                evaluations.append(evaluate_volumes(seg, gt, skel, box=box,
                                                    show_progress=show_progress, **score_args))
    reports = []
    for seg, result in zip(segs, evaluations, strict=True):
        for warning in result.report.warnings:
            log.warning("%s: %s", seg.uri, warning)
        reports.append(result.report)

    n_errors, root = 0, None
    if errors:
        with timer.phase("errors table"):
            root = serve_root([gt, *segs, *([raw_vol] if raw_vol else [])], config.neuroglancer)
            rows = {seg.uri: error_rows(ev, seg, gt, config.neuroglancer, root, raw_vol)
                    for seg, ev in zip(segs, evaluations, strict=True)}
            n_errors = sum(len(r) for r in rows.values())
            write_atomic(errors, errors_csv(rows, lambda seg_uri, k: view_command(
                seg_uri, gt.uri, raw, errors, k)))
        n_links = sum(bool(row["neuroglancer"]) for r in rows.values() for row in r)
        log.info("wrote %d merges and splits to %s%s", n_errors, errors,
                 f"; open one with its 'view' column, e.g. `{view_command(segs[0].uri, gt.uri, raw, errors, 1)}`"
                 if n_errors else "")
        if root is not None and n_links:
            port = urllib.parse.urlsplit(config.neuroglancer.local_server).port or 80
            log.info("its Neuroglancer links read the local layers from %s: serve them there "
                     "first with `pytc-eval serve %s --port %d`",
                     config.neuroglancer.local_server, root, port)
    log.debug("timings: %s", timer.line())
    return EvalReport(gt.uri, tuple(reports), config.skeletons, errors, n_errors, root,
                      timer.timings)
