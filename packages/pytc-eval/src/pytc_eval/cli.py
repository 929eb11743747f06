"""The ``pytc-eval`` command: score segmentations against ground truth, print a JSON report."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import cyclopts
from cyclopts import Parameter

from pytc_core.cli import emit, resolve_input_uri, run_entry_point, setup_logging
from pytc_core.errors import UserError
from pytc_eval import __version__
from pytc_eval.skeletons import KimimaroParams

log = logging.getLogger("pytc.eval")

app = cyclopts.App(
    name="pytc-eval",
    version=__version__,
)


@dataclass
class EvalConfig:
    """Options of ``pytc-eval`` (TOML table ``[eval]`` or a whole file)."""

    skeletons: str | None = None
    merge_threshold: int = 1
    adapted_merge_threshold: int = 5
    block_size: int = 256
    voxel_size: tuple[float, float, float] | None = None
    kimimaro: KimimaroParams = field(default_factory=KimimaroParams)


@app.default
def evaluate(
    segmentations: Annotated[list[str], Parameter(name="SEG_URI", consume_multiple=True,
                                                     allow_leading_hyphen=True)],
    /,
    *,
    gt: Annotated[str, Parameter(name="--gt")],
    skeletons: Annotated[str | None, Parameter(name="--skeletons")] = None,
    json_only: Annotated[bool, Parameter(name="--json", negative="")] = False,
    errors: Annotated[str | None, Parameter(name="--errors")] = None,
    save_skeletons: Annotated[str | None, Parameter(name="--save-skeletons")] = None,
    merge_threshold: Annotated[int | None, Parameter(name="--merge-threshold")] = None,
    block_size: Annotated[int | None, Parameter(name="--block-size")] = None,
    config: Annotated[str | None, Parameter(name="--config")] = None,
    set_: Annotated[list[str] | None, Parameter(name="--set")] = None,
    overwrite: Annotated[bool, Parameter(name="--overwrite", negative="")] = False,
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False,
    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False,
) -> int:
    """Score one or more segmentations against a ground-truth label volume.

    Prints one JSON line per segmentation on stdout (flat keys ``voi_split``, ``voi_merge``,
    ``nvi_split``, ``nvi_merge``, ``nid``, ``rand_split``, ``rand_merge``,
    ``adapted_rand_error``; with skeletons also ``erl``, ``gt_erl``, ``nerl`` (nm),
    ``adapted_nerl``, ``merge_stats``, ``split_stats`` and edge counts by outcome; NaN is
    written as null) and a table on stderr; several segmentations are ranked (by NERL, else
    by total VOI). Only voxels where the ground truth is non-zero count; a predicted 0 there is
    an ordinary segment. Volumes are read block by block, so they may exceed memory.

    Examples::

        pytc-eval seg.h5:seg --gt labels.h5:labels
        pytc-eval seg_t0.3 seg_t0.5 seg_t0.7 --gt gt_layer --skeletons kimimaro --errors err.csv
        pytc-decode aff.zarr | pytc-eval - --gt labels.h5:labels --skeletons skel.json

    Parameters
    ----------
    segmentations
        Segmentation URIs (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``, ``.npy``);
        ``-`` reads one from stdin.
    gt
        Ground-truth label volume URI, same shape as each segmentation.
    skeletons
        Ground-truth skeletons for ERL/NERL: a JSON node/edge list (voxel z, y, x), an SWC file
        or folder (nm), a precomputed skeleton layer, or ``kimimaro`` to skeletonize the
        ground truth (parameters in the config table ``[kimimaro]``).
    json_only
        No table on stderr (the JSON on stdout is printed either way).
    errors
        Write every merge and split with a voxel coordinate (z, y, x) to this CSV file, with
        a Neuroglancer link when both volumes are precomputed layers.
    save_skeletons
        Write the skeletons used (e.g. kimimaro's) as a JSON node/edge list.
    merge_threshold
        A (skeleton, segment) pair counts for merge detection only with at least this many
        nodes (1 = funlib's ERL; ``adapted_merge_threshold`` in the config, default 5, gives
        ``adapted_nerl``).
    block_size
        Edge of the cubic blocks read at a time, in voxels (default 256).
    config
        TOML file with these options (table ``[eval]`` or the whole file).
    set_
        Override any config key: ``--set key=value`` (repeatable; dotted keys for tables,
        values are TOML literals, e.g. ``--set kimimaro.dust_threshold=500``).
    overwrite
        Replace existing ``--errors`` / ``--save-skeletons`` files.
    quiet
        Warnings only on stderr.
    verbose
        Debug logging on stderr.

    """
    setup_logging(quiet, verbose)
    from pytc_core.config import parse_set_options, resolve_config
    from pytc_core.volume import open_volume
    from pytc_eval.report import (
        check_pair,
        error_rows,
        evaluate_volumes,
        format_table,
        ranked_table,
        report_json,
        write_errors_csv,
    )
    from pytc_eval.skeletons import load_skeletons, node_voxels, skeletons_from_labels
    from pytc_eval.skeletons import save_skeletons as save_skeletons_json

    cfg = resolve_config(EvalConfig, config, {"skeletons": skeletons,
                                              "merge_threshold": merge_threshold,
                                              "block_size": block_size}, section="eval",
                         text_overrides=parse_set_options(set_))
    for path in (errors, save_skeletons):
        if path is not None and Path(path).exists() and not overwrite:
            raise UserError(f"{path} already exists", "pass --overwrite to replace it")
    seg_uris = [resolve_input_uri(u) for u in segmentations]
    gt_vol = open_volume(gt)
    seg_vols = [open_volume(u) for u in seg_uris]
    for seg_vol in seg_vols:
        check_pair(seg_vol, gt_vol)
    voxel_size = cfg.voxel_size or gt_vol.voxel_size

    skel = None
    if cfg.skeletons == "kimimaro":
        log.info("skeletonizing %s with kimimaro", gt_vol.uri)
        skel = skeletons_from_labels(gt_vol.read(), voxel_size, cfg.kimimaro, gt_vol.offset)
    elif cfg.skeletons is not None:
        skel = load_skeletons(cfg.skeletons, voxel_size=voxel_size)
    if skel is not None:
        node_voxels(skel, gt_vol.spatial_shape, gt_vol.offset)  # nodes outside: UserError
        log.info("%d skeletons, %d nodes, %d edges", skel.num_skeletons, skel.num_nodes,
                 skel.num_edges)
        if save_skeletons:
            save_skeletons_json(skel, save_skeletons)

    reports, rows = [], {}
    for seg_vol in seg_vols:
        result = evaluate_volumes(seg_vol, gt_vol, skel, voxel_size=voxel_size,
                                  merge_threshold=cfg.merge_threshold,
                                  adapted_merge_threshold=cfg.adapted_merge_threshold,
                                  block_size=cfg.block_size, show_progress=not quiet)
        result.report["skeletons"] = cfg.skeletons
        for warning in result.report["warnings"]:
            log.warning("%s: %s", seg_vol.uri, warning)
        reports.append(result.report)
        rows[seg_vol.uri] = error_rows(result, seg_vol, gt_vol)
        emit(report_json(result.report))
    if errors:
        write_errors_csv(errors, rows)
        log.info("wrote %d errors to %s", sum(len(r) for r in rows.values()), errors)
    if not json_only and not quiet:
        sys.stderr.write(format_table(*ranked_table(reports)) + "\n")
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-eval", app))
