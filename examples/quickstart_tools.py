"""Small steps of examples/quickstart.sh that are not a pytc command.

    python examples/quickstart_tools.py baselines RAW_URI OUT_DIR --z 175,250
        write OUT_DIR/raw_threshold_aff and OUT_DIR/smoothed_gradient_aff (precomputed
        affinity layers of z 175..250, computed with context; pytc_core.baselines); prints
        their URIs, one a line
    pytc-eval seg_t0.3 seg_t0.5 --gt GT --json | python examples/quickstart_tools.py pick
        the best report: by pytc-eval's ranking (NERL, else VOI; --by rank, the default) or
        by total VOI (--by voi, what the quickstart tunes with); prints its threshold (the
        line's ``threshold``, as pytc-eval's sweep over fragments writes it, else the
        segmentation's ``_t<threshold>`` suffix), the report JSON goes to --save if given;
        --threshold T takes the report at T instead of the best
    python examples/quickstart_tools.py report REPORT.json --threshold 0.3
        prints the report with a top-level ``threshold`` field
    python examples/quickstart_tools.py slice OUT.png --raw R --aff A --seg S --gt G [--z Z]
            [--report REPORT.json] [--baseline NAME=REPORT.json ...]
        one z section side by side, each panel titled: raw | affinities (z, y, x as R, G, B)
        | segmentation | ground truth, and a caption with the section and the scores
    python examples/quickstart_tools.py field REPORT.json threshold
        prints one top-level field of a report
    python examples/quickstart_tools.py table NAME=REPORT.json ...
        the final table (VOI split/merge, adapted Rand error, ERL, NERL, segments) on stdout
    python examples/quickstart_tools.py seeds RUN_DIR ...
        one row per quickstart run (examples/quickstart_seeds.sh): seed, threads, precision,
        minutes, model and baseline VOI and NERL, and whether the model beats both baselines
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from pytc_core import BBox, create_volume, open_volume

THRESHOLD_SUFFIX = re.compile(r"_t([0-9.]+)/?$")


def cmd_baselines(args: argparse.Namespace) -> None:
    from pytc_core.baselines import gradient_affinities, intensity_affinities

    raw_vol = open_volume(args.raw)
    z0, z1 = (int(v) for v in args.z.split(","))
    start, stop = raw_vol.bbox.start, raw_vol.bbox.stop
    box = BBox((z0, start[1], start[2]), (z1, stop[1], stop[2]))
    context = int(4 * args.sigma + 2)  # the smoothing's reach, so borders match a whole-volume run
    read = BBox((max(z0 - context, start[0]), start[1], start[2]),
                (min(z1 + context, stop[0]), stop[1], stop[2]))
    raw = raw_vol.read(read)
    crop = (slice(None), slice(z0 - read.start[0], z1 - read.start[0]))
    made = {
        "raw_threshold_aff": intensity_affinities(raw[crop[1]]),
        "smoothed_gradient_aff": gradient_affinities(raw, args.sigma)[crop],
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name, aff in made.items():
        uri = f"{args.out}/{name}"
        vol = create_volume(uri, aff.shape, np.float32, voxel_size=raw_vol.voxel_size,
                            offset=box.start, chunk_size=(64, 64, 64), overwrite=True)
        vol.write(np.ascontiguousarray(aff), box.start)
        print(uri, flush=True)


def threshold_of(report: dict) -> float | None:
    """The decode threshold of a report: its ``threshold`` (a line of pytc-eval's sweep over
    fragments), else the ``_t<threshold>`` suffix of its segmentation."""
    if report.get("threshold") is not None:
        return float(report["threshold"])
    m = THRESHOLD_SUFFIX.search(report.get("segmentation", ""))
    return float(m.group(1)) if m else None


def total_voi(report: dict) -> float:
    """VOI split + merge of a report (inf where either is missing: ranks last)."""
    split, merge = report.get("voi_split"), report.get("voi_merge")
    return math.inf if split is None or merge is None else float(split) + float(merge)


def cmd_pick(args: argparse.Namespace) -> None:
    from pytc_eval.report import rank_reports

    reports = [json.loads(line) for line in sys.stdin if line.strip()]
    if not reports:
        sys.exit("quickstart_tools pick: error: no pytc-eval report on stdin")
    if args.threshold is not None:  # not the best: the report at this threshold
        best = next((r for r in reports if threshold_of(r) == args.threshold), None)
        if best is None:
            sys.exit(f"quickstart_tools pick: error: no report at threshold {args.threshold:g}")
    elif args.by == "voi":
        best = min(reports, key=total_voi)
    else:
        best = rank_reports(reports)[0]
    t = threshold_of(best)
    if t is None:
        sys.exit(f"quickstart_tools pick: error: {best['segmentation']} has no threshold "
                 "(neither a sweep line nor a _t<threshold> suffix)")
    if args.save:
        Path(args.save).write_text(json.dumps({**best, "threshold": t}) + "\n")
    print(f"{t:g}")


def cmd_report(args: argparse.Namespace) -> None:
    report = json.loads(Path(args.report).read_text())
    print(json.dumps({"threshold": args.threshold, **report}))


def cmd_field(args: argparse.Namespace) -> None:
    print(json.loads(Path(args.report).read_text())[args.key])


def _label_rgb(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: each id its own colour (hashed), 0 black."""
    ids = labels.astype(np.uint64)
    h = ids * np.uint64(2654435761) % np.uint64(2**32)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=-1)
    rgb = (64 + rgb.astype(np.uint16) * 191 // 255).astype(np.uint8)
    rgb[ids == 0] = 0
    return rgb


PANEL_TITLES = ("raw", "affinities (z y x = R G B)", "segmentation", "ground truth")


def scores_caption(name: str, report: dict) -> str:
    """``model (ws 0.2): VOI 2.684 (split 2.177, merge 0.507), NERL 0.0238, 1016 segments``."""
    t = report.get("threshold")
    nerl = report.get("nerl")
    return (f"{name}{f' (threshold {t:g})' if t is not None else ''}: VOI {total_voi(report):.3f} "
            f"(split {report.get('voi_split', math.nan):.3f}, merge "
            f"{report.get('voi_merge', math.nan):.3f}), NERL "
            f"{'-' if nerl is None else f'{nerl:.4f}'}, {report.get('n_segments', '?')} segments")


def _text_rows(lines: list[str], width: int, height: int = 16) -> np.ndarray:
    """(len(lines) * height, width, 3) uint8: black text on white, one line a row (Pillow's
    built-in font; Pillow comes with pytc-eval's neuroglancer)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height * len(lines)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((4, i * height + 2), line, fill=(0, 0, 0))
    return np.asarray(image, dtype=np.uint8)


def cmd_slice(args: argparse.Namespace) -> None:
    from pytc_train.preview import write_png

    seg = open_volume(args.seg)
    z = args.z if args.z is not None else (seg.bbox.start[0] + seg.bbox.stop[0]) // 2
    box = BBox((z, *seg.bbox.start[1:]), (z + 1, *seg.bbox.stop[1:]))
    raw = open_volume(args.raw).read(box)[0].astype(np.float32)
    lo, hi = np.percentile(raw, (0.5, 99.5))
    gray = (255 * np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1)).astype(np.uint8)
    aff = open_volume(args.aff).read(box)[:3, 0].astype(np.float32)
    if np.issubdtype(open_volume(args.aff).dtype, np.integer):
        aff /= 255.0
    panels = [np.repeat(gray[..., None], 3, axis=-1),
              (255 * np.clip(aff, 0, 1)).astype(np.uint8).transpose(1, 2, 0),
              _label_rgb(seg.read(box)[0]),
              _label_rgb(open_volume(args.gt).read(box)[0])]
    gap = np.full((panels[0].shape[0] + TITLE_HEIGHT, GAP, 3), 255, np.uint8)
    titled = [np.concatenate([_text_rows([title], p.shape[1], TITLE_HEIGHT), p], axis=0)
              for title, p in zip(PANEL_TITLES, panels, strict=True)]
    row = np.concatenate([p for panel in titled for p in (panel, gap)][:-1], axis=1)
    caption = [f"section z {z}, voxels (y, x) {box.start[1]}..{box.stop[1]}, "
               f"{box.start[2]}..{box.stop[2]}; scores of the whole region {_region(seg)}"]
    if args.report:
        caption.append(scores_caption("model", json.loads(Path(args.report).read_text())))
    for item in args.baseline or []:
        name, _, path = item.partition("=")
        caption.append(scores_caption(name, json.loads(Path(path).read_text())))
    image = np.concatenate([row, _text_rows(caption, row.shape[1], TITLE_HEIGHT)], axis=0)
    write_png(args.png, image)
    print(args.png)
    print(f"slice z {z}: {' | '.join(PANEL_TITLES)}", file=sys.stderr)


#: pixels of one title or caption line, and between panels
TITLE_HEIGHT = 16
GAP = 4


def _region(vol) -> str:
    a, b = vol.bbox.start, vol.bbox.stop
    return f"z {a[0]}..{b[0]}" if (a[1], a[2]) == (0, 0) else f"{tuple(a)}..{tuple(b)}"


def cmd_seeds(args: argparse.Namespace) -> None:
    """The table of examples/quickstart_seeds.sh: one row per run directory."""
    import tomllib

    header = ["seed", "threads", "precision", "minutes", "model VOI", "model NERL",
              "raw_threshold VOI", "raw_threshold NERL", "smoothed_gradient VOI",
              "smoothed_gradient NERL", "beats both VOI", "beats both NERL"]
    rows = []
    for run in map(Path, args.runs):
        config = tomllib.loads((run / "train" / "pytc_config.toml").read_text())
        seconds = (run / "seconds.txt").read_text().strip() if (run / "seconds.txt").is_file() \
            else ""
        model = json.loads((run / "report.json").read_text())
        base = {name: json.loads((run / "baselines" / f"{name}.json").read_text())
                for name in ("raw_threshold", "smoothed_gradient")}
        voi_wins = all(total_voi(model) < total_voi(b) for b in base.values())
        nerl_wins = all((model.get("nerl") or 0.0) > (b.get("nerl") or 0.0) for b in base.values())
        rows.append([str(config["train"]["seed"]), str(config["train"]["threads"]),
                     str(config["train"]["precision"]),
                     f"{float(seconds) / 60:.1f}" if seconds else "-",
                     f"{total_voi(model):.3f}", f"{model.get('nerl') or 0.0:.4f}",
                     *(v for b in base.values()
                       for v in (f"{total_voi(b):.3f}", f"{b.get('nerl') or 0.0:.4f}")),
                     "yes" if voi_wins else "no", "yes" if nerl_wins else "no"])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def cmd_table(args: argparse.Namespace) -> None:
    cols = [("voi_split", "VOI split"), ("voi_merge", "VOI merge"), ("voi", "VOI"),
            ("adapted_rand_error", "ARAND"), ("erl", "ERL nm"), ("nerl", "NERL"),
            ("n_segments", "segments"), ("n_gt_segments", "GT segments"),
            ("threshold", "threshold")]
    rows = []
    for item in args.reports:
        name, _, path = item.partition("=")
        r = json.loads(Path(path).read_text())
        split, merge = r.get("voi_split"), r.get("voi_merge")
        r["voi"] = math.nan if split is None or merge is None else split + merge
        rows.append([name, *("-" if r.get(k) is None else
                             f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                             for k, _ in cols)])
    header = ["", *(label for _, label in cols)]
    widths = [max(len(c) for c in col) for col in zip(header, *rows, strict=True)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("baselines", help="write the baselines' affinity layers of a z range")
    p.add_argument("raw")
    p.add_argument("out")
    p.add_argument("--z", required=True, help="z0,z1 (global voxels, stop excluded)")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian sigma in voxels (1.0)")
    p.set_defaults(fn=cmd_baselines)
    p = sub.add_parser("pick", help="best threshold from pytc-eval JSON lines on stdin")
    p.add_argument("--save", help="write the best report (with its threshold) here")
    p.add_argument("--threshold", type=float, help="take the report at this threshold instead")
    p.add_argument("--by", choices=("rank", "voi"), default="rank",
                   help="rank: pytc-eval's ranking (NERL, else VOI); voi: lowest total VOI")
    p.set_defaults(fn=cmd_pick)
    p = sub.add_parser("report", help="add a top-level threshold to a report")
    p.add_argument("report")
    p.add_argument("--threshold", type=float, required=True)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("field", help="print one top-level field of a JSON report")
    p.add_argument("report")
    p.add_argument("key")
    p.set_defaults(fn=cmd_field)
    p = sub.add_parser("slice", help="PNG of one section: raw, affinities, segmentation, GT")
    p.add_argument("png")
    for name in ("raw", "aff", "seg", "gt"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--z", type=int, help="global z (default: the segmentation's middle)")
    p.add_argument("--report", help="the model's report: its scores go in the caption")
    p.add_argument("--baseline", action="append", help="NAME=REPORT.json, also in the caption")
    p.set_defaults(fn=cmd_slice)
    p = sub.add_parser("table", help="final table of NAME=report.json pairs")
    p.add_argument("reports", nargs="+")
    p.set_defaults(fn=cmd_table)
    p = sub.add_parser("seeds", help="table of quickstart runs (examples/quickstart_seeds.sh)")
    p.add_argument("runs", nargs="+")
    p.set_defaults(fn=cmd_seeds)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
