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
from typing import TYPE_CHECKING

from pytc_core.bbox import BBox, parse_bbox, vec3
from pytc_core.errors import UserError
from pytc_core.memory import cube_edge, memory_budget
from pytc_core.timing import PhaseTimer
from pytc_core.volume import Volume
from pytc_eval.links import LinkSettings
from pytc_eval.report import SegmentationReport, format_table, ranked_table
from pytc_eval.skeletons import KimimaroParams

if TYPE_CHECKING:
    from pytc_eval.sample import Samples

__all__ = ["EvalConfig", "EvalReport", "run_eval"]

#: voxels (all segmentations together) each worker process must have to sample, or the blocks
#: are sampled in this process: starting the workers costs 1-4 s (imports, compiled kernels),
#: as much as sampling 2**28 voxels in one process at about 60-80 M voxels/s (measured)
PROCESS_MIN_VOXELS = 1 << 28

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
    #: merge thresholds to score when a segmentation is a fragments output (its merge
    #: history beside it); None: the thresholds the decode was asked for
    thresholds: tuple[float, ...] | None = None
    #: processes for kimimaro's objects and for sampling the blocks of every segmentation
    #: (from PROCESS_MIN_VOXELS voxels per process); None: the cores this process may use
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
    #: the samples files written by ``step="sample"`` (one per segmentation)
    samples: tuple[str, ...] = ()

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


def _chunk_multiple(vols: Sequence[Volume]) -> tuple[int, int, int]:
    """Per axis the least common multiple of the volumes' chunk sizes (z, y, x voxels); a
    volume stored in one piece along an axis (a chunk as long as the volume) does not count."""
    import math

    return tuple(math.lcm(1, *(int(v.chunk_size[i]) for v in vols  # type: ignore[return-value]
                               if v.chunk_size[i] < v.spatial_shape[i]))
                 for i in range(3))


def _planned_block_size(gt: Volume, segs: Sequence[Volume],
                        parallel: int = 1) -> tuple[int, int, int]:
    """256³ blocks, or the largest smaller cube whose segmentation and ground truth (three
    copies each while a block is scored, in each of ``parallel`` passes at once) fit in half
    the memory budget; each axis rounded down to a multiple of the volumes' chunks (so each
    chunk is read once) where one fits."""
    budget = memory_budget()
    per_voxel = 3 * parallel * (gt.dtype.itemsize + max(s.dtype.itemsize for s in segs))
    edge = cube_edge(budget.available // 2, per_voxel)
    multiple = _chunk_multiple([gt, *segs])
    block = tuple(edge - edge % m if 0 < m <= edge else edge for m in multiple)
    log.debug("memory budget: %s; blocks of %s voxels", budget.line(),
              f"{block[0]}³" if len(set(block)) == 1 else block)
    return block  # type: ignore[return-value]


def run_eval(segmentations: Sequence[str], ground_truth: str, config: EvalConfig = EvalConfig(),
             *, errors: str | None = None, save_skeletons: str | None = None,
             overwrite: bool = False, show_progress: bool = False,
             raw: str | None = None, step: str = "all",
             share: tuple[int, int] | None = None, scratch: str | None = None) -> EvalReport:
    """Score each segmentation URI against the ground-truth URI.

    Volumes are aligned by global coordinates: each segmentation is scored on the
    intersection of its box and the ground truth's (cut to ``config.bbox``), and the report
    records that box; different voxel sizes and boxes that do not overlap are UserErrors.
    Skeletons (``config.skeletons``) are loaded once, or computed with kimimaro from the
    ground truth inside the boxes scored; ``save_skeletons`` writes them as JSON, ``errors``
    writes every merge and split as CSV (existing files need ``overwrite``), each row with
    the ``pytc-eval view`` command that opens it (with ``raw``, the raw EM volume, as a layer).
    Nothing is written before every input has been checked.

    A segmentation with a merge history beside it (the fragments of ``pytc-decode --method
    ws --fragments-only``) is scored at every threshold (``config.thresholds``, default the
    decode's) from one pass over the fragments: one report per threshold.
    ``step="sample"`` samples only the blocks of ``share`` (i, n) into ``scratch`` and
    returns no report; ``step="reduce"`` builds the reports from every share's samples.
    """
    from pytc_core.blocks import plan_blocks, select_share
    from pytc_core.cli import progress_counter
    from pytc_core.config import config_to_toml
    from pytc_core.files import write_atomic
    from pytc_core.merge_history import read_merge_history
    from pytc_core.output_run import open_input
    from pytc_core.volume import require_integer_labels
    from pytc_eval.align import check_voxel_sizes, evaluation_box
    from pytc_eval.links import error_rows, errors_csv, serve_root, view_command
    from pytc_eval.sample import SampleJob, sample_blocks, sample_in_processes
    from pytc_eval.score import evaluation_from_samples, prepare_nodes
    from pytc_eval.shares import pass_key, read_shares, share_path, write_share
    from pytc_eval.skeleton_blocks import default_workers, skeletonize_blockwise
    from pytc_eval.skeletons import load_skeletons, node_voxels
    from pytc_eval.skeletons import save_skeletons as save_skeletons_json
    from pytc_eval.sweep import check_thresholds, removed_below, sweep_evaluations, sweep_thresholds

    log.debug("resolved config:\n%s", config_to_toml(config).rstrip())
    if not segmentations:
        raise UserError("no segmentation to evaluate", "give at least one segmentation URI")
    skeleton_file = (config.skeletons if config.skeletons not in (None, "kimimaro")
                     and "://" not in str(config.skeletons) else None)
    if step not in ("all", "sample", "reduce"):
        raise UserError(f"unknown step '{step}'", "use --step sample or --step reduce")
    if step != "all" and scratch is None:
        raise UserError(f"--step {step} needs a --scratch folder for the shares' samples",
                        "add --scratch DIR (the same for every share and the reduce)")
    if step == "sample" and share is None:
        raise UserError("--step sample needs --blocks i/n", "e.g. --blocks 0/4")
    if step != "all" and config.skeletons == "kimimaro":
        raise UserError("--skeletons kimimaro cannot be computed by each share",
                        "compute them once (pytc-eval ... --save-skeletons skel.json) and "
                        "pass --skeletons skel.json")
    if step != "all" and errors:
        raise UserError("--errors needs the whole evaluation", "drop --errors with --step")
    if config.thresholds is not None:
        check_thresholds(config.thresholds)
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
        histories = [read_merge_history(seg.uri) for seg in segs]
        sweeps: list[list[float] | None] = []
        min_sizes = []
        for seg, box, history in zip(segs, boxes, histories, strict=True):
            if history is None:
                sweeps.append(None)
                min_sizes.append(0)
                continue
            sweeps.append(sweep_thresholds(history, config.thresholds))
            min_sizes.append(removed_below(history))
            if min_sizes[-1] and box != seg.bbox:
                raise UserError(f"the fragments {seg.uri} were decoded with min_size "
                                f"{min_sizes[-1]} over {seg.bbox}, but the sweep sees only "
                                f"{box}, so it cannot tell which segments were removed",
                                "score the whole fragments volume (ground truth covering it, "
                                "no --bbox)")
            if errors:
                raise UserError(f"--errors lists the errors of one segmentation, but {seg.uri} "
                                "is a sweep of thresholds",
                                "score the sweep first, then the chosen threshold's "
                                "segmentation with --errors")
        if config.thresholds is not None and all(h is None for h in histories):
            raise UserError("--thresholds scores the fragments of pytc-decode --method ws "
                            "--fragments-only, but no input has a merge history beside it",
                            "give the fragments output, or drop --thresholds")
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
                log.info("skeletonizing %s in %s with kimimaro (%s, %d processes)", gt.uri,
                         region, f"object by object, scanned in blocks of "
                         f"{config.kimimaro.block}³ voxels" if config.kimimaro.block > 0
                         else "one call on the whole region", workers)
                skel = skeletonize_blockwise(ground_truth, region, voxel_size, config.kimimaro,
                                             block=config.kimimaro.block, workers=workers,
                                             fill_missing=config.fill_missing)
            else:
                skel = load_skeletons(config.skeletons, voxel_size=voxel_size)
                node_voxels(skel, gt.spatial_shape, gt.offset)  # nodes outside: UserError
            log.info("%d skeletons, %d nodes, %d edges", skel.num_skeletons, skel.num_nodes,
                     skel.num_edges)

    # the blocks of every segmentation are sampled by `workers` processes at once when the
    # work is worth starting them (each holds its own blocks, so they share the budget)
    voxels = sum(box.size for box in boxes) // (share[1] if share is not None else 1)
    processes = (min(workers, max(1, voxels // PROCESS_MIN_VOXELS))
                 if step != "reduce" and workers > 1 else 1)
    block_size = config.block_size or _planned_block_size(gt, segs, processes)
    straddled = [m for m, b in zip(_chunk_multiple([gt, *segs]), vec3(block_size, "block"),
                                   strict=True) if m <= b and b % m]
    if straddled:
        log.info("blocks of %s voxels are not multiples of the volumes' chunks %s: chunks on "
                 "block faces are read once per block they touch", block_size,
                 _chunk_multiple([gt, *segs]))
    plans = [plan_blocks(box, block_size, grid_origin=gt.offset) for box in boxes]
    for seg, box, blocks in zip(segs, boxes, plans, strict=True):
        log.debug("%s: %d blocks of %s voxels over %s", seg.uri, len(blocks), block_size, box)
    nodes = [prepare_nodes(skel, box, gt.offset, block_size) for box in boxes]
    # a sweep counts its fragments as the lowest threshold's segments: every threshold's
    # segments are unions of those, and they have a fraction of the fragments' runs
    levels = [min(sweep) if history is not None and sweep and history.merges_below(min(sweep))
              else None for history, sweep in zip(histories, sweeps, strict=True)]
    relabels = [history.segment_table(level) if history is not None and level is not None
                else None for history, level in zip(histories, levels, strict=True)]
    keys = [pass_key(seg.uri, gt.uri, box, block_size, config.skeletons,
                     seg_skel.num_nodes if seg_skel is not None else 0, level)
            for seg, box, (seg_skel, _, _), level in zip(segs, boxes, nodes, levels,
                                                          strict=True)]
    mine = [select_share(b, share) if share is not None else b for b in plans]
    sampled: list[Samples | None] = [None] * len(segs)
    written: list[str] = []
    if step == "sample":  # shares sampled before (a requeued task) are kept
        done = {k for k in range(len(segs))
                if share_path(str(scratch), keys[k], share or (0, 1)).is_file()}
        for k in sorted(done):
            log.info("%s: share %s already sampled", segs[k].uri, share)
    else:
        done = set()
    todo = [k for k in range(len(segs)) if k not in done]
    if step == "reduce":
        assert scratch is not None
        sampled = [read_shares(scratch, key, seg.uri) for seg, key in zip(segs, keys,
                                                                          strict=True)]
    elif processes > 1 and todo:
        log.info("sampling %d segmentation%s with %d processes", len(todo),
                 "s" if len(todo) > 1 else "", processes)
        with timer.phase("sampling"):
            jobs = [SampleJob(segs[k].uri, gt.uri, mine[k], nodes[k][1], nodes[k][2],
                              relabels[k]) for k in todo]
            for k, got in zip(todo, sample_in_processes(
                    jobs, processes, fill_missing=config.fill_missing,
                    progress=progress_counter if show_progress else None,
                    description=f"evaluating {len(todo)} segmentation"
                                f"{'s' if len(todo) > 1 else ''}"), strict=True):
                sampled[k] = got
    else:
        for k in todo:
            seg = segs[k]
            with timer.phase(f"sampling {seg.uri}"):
                sampled[k] = got = sample_blocks(
                    seg, gt, mine[k], nodes[k][1], node_blocks=nodes[k][2], relabel=relabels[k],
                    progress=progress_counter if show_progress else None,
                    description=f"evaluating {seg.uri.rstrip('/').rsplit('/', 1)[-1]}")
            if step == "sample":  # written at once: a task killed later keeps this share
                assert scratch is not None and share is not None
                write_share(scratch, keys[k], share, got)
                done.add(k)
    reports, evaluations = [], []
    for k, (seg, box, history, sweep, min_size) in enumerate(zip(
            segs, boxes, histories, sweeps, min_sizes, strict=True)):
        seg_skel, node_vox, _ = nodes[k]
        if step == "sample":
            assert scratch is not None and share is not None
            part = sampled[k]
            written.append(str(share_path(str(scratch), keys[k], share)) if k in done
                           or part is None else str(write_share(scratch, keys[k], share, part)))
            continue
        samples = sampled[k]
        assert samples is not None
        with timer.phase(f"scoring {seg.uri}"):
            options = dict(voxel_size=voxel_size, box=box,
                           merge_threshold=config.merge_threshold,
                           adapted_merge_threshold=config.adapted_merge_threshold,
                           skeleton_source=config.skeletons)
            if history is None:
                node_seg = (samples.node_labels(seg_skel.num_nodes) if seg_skel is not None
                            else None)
                results = [evaluation_from_samples(
                    seg.uri, gt.uri, samples.table.pairs(include_background=True), seg_skel,
                    node_seg, node_vox, **options)]  # type: ignore[arg-type]
            else:
                assert sweep is not None
                results = sweep_evaluations(seg.uri, gt.uri, samples, history, sweep,
                                            seg_skel, node_vox, min_size=min_size,
                                            counted_at=levels[k],
                                            **options)  # type: ignore[arg-type]
        for result in results:
            for warning in result.report.warnings:
                log.warning("%s: %s", seg.uri, warning)
            reports.append(result.report)
            evaluations.append(result)
    if save_skeletons and skel is not None and step != "sample":
        save_skeletons_json(skel, save_skeletons)

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
                      timer.timings, tuple(written))
