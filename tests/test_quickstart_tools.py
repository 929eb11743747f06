"""examples/quickstart_tools.py's pick and report steps, and pytc-eval's ranking they use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pytc_eval.report import rank_reports

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [sys.executable, str(ROOT / "examples" / "quickstart_tools.py")]


def _report(uri, split, merge, nerl=None):
    r = {"segmentation": uri, "voi_split": split, "voi_merge": merge}
    if nerl is not None:
        r["nerl"] = nerl
    return r


def test_rank_reports_by_nerl_then_voi_else_voi():
    a, b, c = (_report("s_t0.2", 1.0, 0.5, 0.30), _report("s_t0.3", 0.2, 0.2, 0.30),
               _report("s_t0.5", 3.0, 0.0, 0.40))
    assert [r["segmentation"] for r in rank_reports([a, b, c])] == ["s_t0.5", "s_t0.3", "s_t0.2"]
    # NaN NERL (null in JSON) ranks last
    assert rank_reports([_report("x", 0, 0, None) | {"nerl": None}, a])[0] is a
    # without skeletons: total VOI, lower first
    plain = [_report("p_t0.4", 1.0, 1.0), _report("p_t0.5", 0.5, 0.4)]
    assert rank_reports(plain)[0]["segmentation"] == "p_t0.5"


def test_pick_prints_the_best_threshold_and_saves_its_report(tmp_path):
    lines = "\n".join(json.dumps(r) for r in [
        _report("runs/q/val_seg_t0.1", 2.0, 0.1, 0.2), _report("runs/q/val_seg_t0.3", 0.5, 0.3, 0.6),
        _report("runs/q/val_seg_t0.7", 0.1, 2.5, 0.1)]) + "\n"
    best = tmp_path / "best.json"
    out = subprocess.run([*TOOLS, "pick", "--save", str(best)], input=lines,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "0.3\n"
    assert json.loads(best.read_text())["threshold"] == 0.3
    report = subprocess.run([*TOOLS, "report", str(best), "--threshold", "0.3"],
                            capture_output=True, text=True, timeout=120)
    assert json.loads(report.stdout)["threshold"] == 0.3
    assert json.loads(report.stdout)["nerl"] == 0.6
    bad = subprocess.run([*TOOLS, "pick"], input=json.dumps(_report("seg", 0, 0)) + "\n",
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "has no threshold" in bad.stderr


def test_pick_reads_the_threshold_of_sweep_lines():
    """pytc-eval's sweep over fragments writes one line per threshold, each naming it, all
    with the fragments' URI as the segmentation."""
    lines = "\n".join(json.dumps(_report("runs/q/val_frag", *voi) | {"threshold": t})
                      for t, voi in [(0.1, (2.0, 0.1)), (0.3, (0.5, 0.3)), (0.7, (0.1, 2.5))])
    out = subprocess.run([*TOOLS, "pick", "--by", "voi"], input=lines + "\n",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "0.3\n"
    at = subprocess.run([*TOOLS, "pick", "--threshold", "0.7"], input=lines + "\n",
                        capture_output=True, text=True, timeout=120)
    assert at.stdout == "0.7\n"


def test_pick_by_voi_takes_the_lowest_total_voi(tmp_path):
    """The quickstart tunes by total VOI: t0.3 (0.8) wins over t0.1 (2.1), whose NERL ranks
    it first."""
    lines = "\n".join(json.dumps(r) for r in [
        _report("v/seg_t0.1", 2.0, 0.1, 0.9), _report("v/seg_t0.3", 0.5, 0.3, 0.6),
        _report("v/seg_t0.7", 0.1, 2.5, 0.1)]) + "\n"
    by = {}
    for how in ("rank", "voi"):
        out = subprocess.run([*TOOLS, "pick", "--by", how], input=lines, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        by[how] = out.stdout
    assert by == {"rank": "0.1\n", "voi": "0.3\n"}


def _volume(path, array, offset=(0, 0, 0)):
    from pytc_core import create_volume

    vol = create_volume(str(path), array.shape, array.dtype, voxel_size=(10, 10, 10),
                        offset=offset[-3:])
    vol.write(array, offset[-3:])
    return str(path)


def test_slice_has_a_title_over_each_panel_and_the_scores_below(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    gt = np.repeat(np.arange(1, 5, dtype=np.uint32), 16).reshape(1, 1, 64).repeat(40, 1)
    gt = np.repeat(gt, 6, axis=0)  # z 0..6, 40 x 64
    raw = _volume(tmp_path / "raw", rng.integers(0, 255, gt.shape, dtype=np.uint8))
    aff = _volume(tmp_path / "aff", rng.random((3, 4, 40, 64), dtype=np.float32), (0, 2, 0, 0))
    seg = _volume(tmp_path / "seg", gt[2:], (2, 0, 0))
    gtu = _volume(tmp_path / "gt", gt)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"threshold": 0.2, "voi_split": 1.25, "voi_merge": 0.5,
                                  "nerl": 0.0238, "n_segments": 1016}))
    base = tmp_path / "raw_threshold.json"
    base.write_text(json.dumps({"threshold": 0.65, "voi_split": 0.6, "voi_merge": 3.6,
                                "nerl": None, "n_segments": 135}))
    png = tmp_path / "slice.png"
    out = subprocess.run([*TOOLS, "slice", str(png), "--raw", raw, "--aff", aff, "--seg", seg,
                          "--gt", gtu, "--report", str(report), "--baseline",
                          f"raw_threshold={base}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    image = _png_pixels(png)
    # 4 panels of 64 px, 3 gaps of 4; a title row of 16 px, the image, 3 caption rows
    assert image.shape == (16 + 40 + 3 * 16, 4 * 64 + 3 * 4, 3)
    for i in range(4):  # a title (dark pixels on white) over every panel
        title = image[:16, i * 68:i * 68 + 64]
        assert (title < 100).any() and (title == 255).mean() > 0.5
    caption = image[56:]
    for row in range(3):
        assert (caption[row * 16:(row + 1) * 16] < 100).any()  # a line of text each
    # the ground-truth panel is the labels' colours of section z 4 (the seg's middle)
    assert (image[16:56, 3 * 68:3 * 68 + 64] > 0).all()
    assert "raw | affinities (z y x = R G B) | segmentation | ground truth" in out.stderr
    scores_caption = _tools_module().scores_caption
    assert scores_caption("model", json.loads(report.read_text())) == \
        "model (threshold 0.2): VOI 1.750 (split 1.250, merge 0.500), NERL 0.0238, 1016 segments"
    assert scores_caption("raw_threshold", json.loads(base.read_text())).endswith(
        "NERL -, 135 segments")


def _tools_module():
    """examples/quickstart_tools.py imported as a module (examples/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_tools",
                                                  ROOT / "examples" / "quickstart_tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_pixels(path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_seeds_table_has_a_row_per_run_and_says_who_wins(tmp_path):
    def run(name, seed, model, raw_threshold, gradient, seconds):
        d = tmp_path / name
        (d / "train").mkdir(parents=True)
        (d / "baselines").mkdir()
        (d / "train" / "pytc_config.toml").write_text(
            f'[train]\nseed = {seed}\nthreads = 2\nprecision = "bf16-mixed"\n')
        (d / "report.json").write_text(json.dumps(model))
        (d / "baselines" / "raw_threshold.json").write_text(json.dumps(raw_threshold))
        (d / "baselines" / "smoothed_gradient.json").write_text(json.dumps(gradient))
        (d / "seconds.txt").write_text(f"{seconds}\n")
        return str(d)

    raw_t = {"voi_split": 0.617, "voi_merge": 3.651, "nerl": 0.0174}
    grad = {"voi_split": 4.941, "voi_merge": 1.2, "nerl": 0.0225}
    runs = [run("s0", 0, {"voi_split": 2.177, "voi_merge": 0.507, "nerl": 0.0238}, raw_t, grad,
                870),
            run("s1", 1, {"voi_split": 2.0, "voi_merge": 0.2, "nerl": 0.0209}, raw_t, grad, 900)]
    out = subprocess.run([*TOOLS, "seeds", *runs], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| seed | threads | precision | minutes | model VOI |")
    assert lines[2] == ("| 0 | 2 | bf16-mixed | 14.5 | 2.684 | 0.0238 | 4.268 | 0.0174 | 6.141 "
                        "| 0.0225 | yes | yes |")
    assert lines[3].endswith("| 15.0 | 2.200 | 0.0209 | 4.268 | 0.0174 | 6.141 | 0.0225 | yes "
                             "| no |")
