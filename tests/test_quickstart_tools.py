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
    assert bad.returncode != 0 and "no _t<threshold> suffix" in bad.stderr
