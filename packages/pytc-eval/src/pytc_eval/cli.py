"""The ``pytc-eval`` command: score segmentations against ground truth, print a JSON report.

Only parsing and printing: the work is :func:`pytc_eval.eval.run_eval`.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Annotated

from cyclopts import Parameter

from pytc_core.bbox import parse_bbox
from pytc_core.cli import (
    CommonFlags,
    emit,
    make_app,
    parse_block_size,
    resolve_input_uris,
    run_entry_point,
)
from pytc_eval import __version__

log = logging.getLogger("pytc.eval")

app = make_app("pytc-eval", __version__)


def _bbox(text: str | None) -> tuple[int, ...] | None:
    """``"z0,y0,x0,z1,y1,x1"`` → six ints (:func:`pytc_core.bbox.parse_bbox`)."""
    if text is None:
        return None
    box = parse_bbox(text, "--bbox")
    return box.start + box.stop


def _thresholds(text: str | None) -> tuple[float, ...] | None:
    """``"0.1,0.3"`` → (0.1, 0.3); UserError on anything else."""
    if text is None:
        return None
    from pytc_core.errors import UserError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise UserError(f"bad --thresholds '{text}'", "give numbers in [0, 1], e.g. 0.1,0.3,0.5")
    return values


@app.default
def evaluate(
    segmentations: Annotated[list[str], Parameter(name="SEG_URI", consume_multiple=True,
                                                     allow_leading_hyphen=True)],
    /,
    *,
    gt: Annotated[str, Parameter(name="--gt")],
    skeletons: Annotated[str | None, Parameter(name="--skeletons")] = None,
    json_only: Annotated[bool, Parameter(name="--json")] = False,
    errors: Annotated[str | None, Parameter(name="--errors")] = None,
    raw: Annotated[str | None, Parameter(name="--raw")] = None,
    save_skeletons: Annotated[str | None, Parameter(name="--save-skeletons")] = None,
    merge_threshold: Annotated[int | None, Parameter(name="--merge-threshold")] = None,
    block_size: Annotated[str | None, Parameter(name="--block-size")] = None,
    bbox: Annotated[str | None, Parameter(name="--bbox")] = None,
    fill_missing: Annotated[bool, Parameter(name="--fill-missing", negative="")] = False,
    thresholds: Annotated[str | None, Parameter(name="--thresholds")] = None,
    step: Annotated[str, Parameter(name="--step")] = "all",
    blocks: Annotated[str | None, Parameter(name="--blocks")] = None,
    scratch: Annotated[str | None, Parameter(name="--scratch")] = None,
    workers: Annotated[int | None, Parameter(name="--workers")] = None,
    common: CommonFlags = CommonFlags(),
) -> int:
    """Score one or more segmentations against a ground-truth label volume.

    Prints one JSON line per segmentation on stdout (flat keys ``voi_split``, ``voi_merge``,
    ``nvi_split``, ``nvi_merge``, ``nid``, ``rand_split``, ``rand_merge``,
    ``adapted_rand_error``, ``n_segments`` and ``n_gt_segments`` (non-zero ids: background
    is not a segment), ``bbox`` (the box scored); with skeletons also ``erl``, ``gt_erl``,
    ``nerl`` (nm), ``adapted_nerl``, ``merge_stats``, ``split_stats`` and edge counts by
    outcome; NaN is written as null) and a table on stderr; several segmentations are ranked
    (by NERL, else by total VOI). Only voxels where the ground truth is non-zero count; a
    predicted 0 there is an ordinary label. Volumes are aligned by their offsets (global
    voxels) and scored where both exist; they must share one voxel size. Volumes are read
    block by block, so they may exceed memory.

    Examples::

        pytc-eval seg.h5:seg --gt labels.h5:labels
        pytc-eval seg_t0.3 seg_t0.5 seg_t0.7 --gt gt_layer --skeletons kimimaro --errors err.csv
        pytc-eval full_seg --gt gt_layer --bbox 175,0,0,250,250,250
        pytc-decode aff.zarr | pytc-eval - --gt labels.h5:labels --skeletons skel.json
        pytc-eval seg --gt gt.h5:labels --skeletons kimimaro --errors err.csv --raw raw.h5:raw
        pytc-eval view seg --gt gt.h5:labels --raw raw.h5:raw --errors err.csv  # look at them
        pytc-eval frag --gt gt.h5:labels --skeletons skel.json   # a sweep: one line per threshold
        pytc-eval seg --gt gt --scratch s --block-size 128 --step sample --blocks $I/8
        pytc-eval seg --gt gt --scratch s --block-size 128 --step reduce

    Parameters
    ----------
    segmentations
        Segmentation URIs (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``, ``.npy``);
        ``-`` reads them from stdin, one per line.
    gt
        Ground-truth label volume URI.
    skeletons
        Ground-truth skeletons for ERL/NERL: a JSON node/edge list (voxel z, y, x), an SWC file
        or folder (nm), a precomputed skeleton layer, or ``kimimaro`` to skeletonize the
        ground truth (parameters in the config table ``[eval.kimimaro]``).
    json_only
        No table on stderr (the JSON on stdout is printed either way).
    errors
        Write every merge (one row per segment) and split (one row per skeleton and segment
        pair) with the skeleton edges and path length (nm) involved and a voxel (z, y, x) to
        this CSV file; its ``view`` column is the ``pytc-eval view`` command that opens the
        row offline (any format), its ``neuroglancer`` column a hosted-Neuroglancer link when
        every layer is precomputed (local ones through ``pytc-eval serve``; addresses in
        ``[eval.neuroglancer]``).
    raw
        The raw EM volume, a layer of the ``--errors`` table's views and links.
    save_skeletons
        Write the skeletons used (e.g. kimimaro's) as a JSON node/edge list.
    merge_threshold
        A (skeleton, segment) pair counts for merge detection only with at least this many
        nodes (1 = funlib's ERL; ``adapted_merge_threshold`` in the config, default 5, gives
        ``adapted_nerl``).
    block_size
        Voxels read at a time: ``256`` (a cube) or ``z,y,x`` (default 256³, smaller when the
        memory budget of the job, from its cgroup or Slurm, is too small; ``-v`` says which).
    bbox
        Score only this box, ``z0,y0,x0,z1,y1,x1`` in global voxels (stops excluded).
    fill_missing
        Read missing chunks of precomputed volumes as zeros (layers sparse on purpose);
        without it a missing chunk is an error naming it.
    thresholds
        For fragments (``pytc-decode --method ws --fragments-only``, their merge history
        beside them): the merge thresholds to score, ``0.1,0.3,0.5`` (default: the ones the
        decode was asked for). Every threshold is scored from one pass over the fragments;
        each JSON line names its ``threshold``.
    step
        ``all`` (default); ``sample``: sample only the blocks of ``--blocks i/n`` into
        ``--scratch`` (prints the folder); ``reduce``: the report from every share's samples
        (Slurm: ``pytc-launch blocks eval``). Every step needs the same arguments.
    blocks
        ``i/n``: task i's share of the blocks (0-based), with ``--step sample``.
    scratch
        Folder of the shares' samples (compressed ``.npz``), with ``--step``.
    workers
        Processes for ``--skeletons kimimaro`` (the ground truth's objects are skeletonized
        one per process, equal to one kimimaro call; objects whose box exceeds ``[eval.kimimaro]
        max_object_voxels`` in cubes of ``block`` voxels joined across their faces) and for
        the blocks of a large evaluation: with 2²⁸ voxels (all segmentations together) or more
        per process, every segmentation's blocks are sampled by the processes at once (default:
        the cores this process may use).
    """
    common.setup_logging()
    from pytc_core.config import resolve_config
    from pytc_eval.eval import EvalConfig, run_eval

    cfg = resolve_config(EvalConfig, common.config, {
        "skeletons": skeletons, "merge_threshold": merge_threshold,
        "block_size": parse_block_size(block_size),
        "bbox": _bbox(bbox), "fill_missing": fill_missing or None, "workers": workers,
        "thresholds": _thresholds(thresholds),
    }, section="eval", text_overrides=common.text_overrides())
    from pytc_core.blocks import parse_share

    share = parse_share(blocks) if blocks is not None else None
    if share is not None and step != "sample":
        from pytc_core.errors import UserError

        raise UserError("--blocks takes a share of the blocks for --step sample",
                        "add --step sample (and --scratch DIR), or drop --blocks")
    report = run_eval(resolve_input_uris(segmentations), gt, cfg, errors=errors,
                      save_skeletons=save_skeletons, overwrite=common.overwrite,
                      show_progress=not common.quiet, raw=raw, step=step, share=share,
                      scratch=scratch)
    if step == "sample":
        emit(str(scratch))
        return 0
    for seg_report in report.segmentations:
        emit(seg_report.to_json())
    if not json_only and not common.quiet:
        sys.stderr.write(report.table() + "\n")
    return 0


@app.command(name="serve")
def serve(
    root: Annotated[str, Parameter(name="DIR")],
    /,
    *,
    port: Annotated[int, Parameter(name="--port")] = 8080,
    host: Annotated[str, Parameter(name="--host")] = "localhost",
) -> int:
    """Serve local precomputed layers over HTTP so the errors CSV's Neuroglancer links open.

    A browser cannot read ``file://`` layers. This serves folder DIR (with the CORS headers
    Neuroglancer needs) until Ctrl-C; the links of ``pytc-eval --errors`` point at
    ``http://localhost:8080`` by default (``[eval.neuroglancer] local_server``).

    Examples::

        pytc-eval serve runs/quickstart
        pytc-eval serve /data/layers --port 9000   # with local_server = "http://localhost:9000"

    Parameters
    ----------
    root
        Folder holding the layers (the one ``pytc-eval --errors`` names).
    port
        TCP port (default 8080).
    host
        Interface to listen on (default ``localhost``: this machine only).
    """
    from pytc_core.serve import serve_folder

    serve_folder(root, host, port, announce=lambda text: sys.stderr.write(text + "\n"))
    return 0


@app.command(name="view")
def view(
    uris: Annotated[list[str] | None, Parameter(name="URI", consume_multiple=True,
                                                   allow_leading_hyphen=True)] = None,
    /,
    *,
    raw: Annotated[str | None, Parameter(name="--raw")] = None,
    gt: Annotated[str | None, Parameter(name="--gt")] = None,
    errors: Annotated[str | None, Parameter(name="--errors")] = None,
    error: Annotated[int | None, Parameter(name="--error")] = None,
    bind: Annotated[str, Parameter(name="--bind")] = "127.0.0.1",
    port: Annotated[int, Parameter(name="--port")] = 0,
    token: Annotated[str | None, Parameter(name="--token")] = None,
    layout: Annotated[str, Parameter(name="--layout")] = "4panel",
) -> int:
    """Look at volumes and step through an evaluation's errors in a local Neuroglancer.

    Prints the viewer's URL (this machine's server, with Neuroglancer's bundled client: no
    internet) as the one line on stdout and serves until Ctrl-C. Volumes open in pytc's
    global coordinates (voxel size and offset); label volumes are segmentation layers,
    3-channel affinities an RGB image. With ``--errors`` each merge (magenta) and split
    (cyan) of the errors.csv is a point linked to its segments; the view opens at the first
    (or ``--error K``) with its segments selected; keys ``n`` / ``p`` step to the next /
    previous error and stderr names the error shown.

    Examples::

        pytc-eval view runs/quickstart/decode/model/test_seg \\
            --raw examples/data/flyem_medulla_250.h5:raw \\
            --gt examples/data/flyem_medulla_250.h5:labels --errors runs/quickstart/errors.csv
        pytc-decode aff.zarr -o seg | pytc-eval view - --raw raw.h5:raw --gt gt.h5:labels
        pytc-eval view seg --bind 0.0.0.0 --port 9000 --token mine   # on a cluster node

    Parameters
    ----------
    uris
        Volumes to show (precomputed layer, ``x.h5:dataset``, ``.zarr``, ``.tif``, ``.npy``,
        ``gs://``, ``s3://``); ``-`` reads them from stdin, one per line. Without any, the
        segmentation named in ``--errors``.
    raw
        The raw EM volume (an image layer, shown first).
    gt
        The ground-truth labels (a segmentation layer).
    errors
        An errors.csv written by ``pytc-eval --errors``: its rows become annotations.
    error
        Open at this row of the errors.csv (1-based, as its ``view`` column names it).
    bind
        Interface to listen on (default 127.0.0.1: this machine only); ``0.0.0.0`` for an
        SSH tunnel from your computer to a cluster node (the command is printed on stderr).
    port
        TCP port (default 0: any free one).
    token
        The URL's secret part; fixed (with ``--port``) the URL survives a restart.
    layout
        Neuroglancer layout: ``4panel``, ``xy``, ``xz``, ``yz``, ``3d``, ...
    """
    from pytc_eval.view import serve_forever, start_view, term_sets, tunnel_hint

    def announce(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    with term_sets(threading.Event()) as stop:  # a TERM from now on stops cleanly
        viewer = start_view(resolve_input_uris(uris or []), raw=raw, gt=gt, errors=errors,
                            error=error, bind=bind, port=port, token=token, layout=layout,
                            announce=announce)
        emit(viewer.url)
        if bind in ("0.0.0.0", "::"):
            announce(tunnel_hint(int(viewer.url.split(":")[2].split("/")[0]), viewer.url))
        announce("pytc-eval view: serving until Ctrl-C")
        serve_forever(stop)
    return 0


def main() -> None:
    sys.exit(run_entry_point("pytc-eval", app))
