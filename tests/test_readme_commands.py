"""Every command in the README's ```bash blocks is accounted for: run here (the example
pipeline, on a small stand-in of the quickstart's outputs; the augmentation preview), or
named with the test that runs it, or with why it is not runnable as written (placeholders
such as ``run.ckpt``, a Slurm cluster). A new README command without an entry fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = ROOT / "examples" / "data" / "flyem_medulla_250.h5"

#: README command (its start) -> how it is run
COVERED: dict[str, str] = {
    "uv sync": "CI (.ci/run) and every session's set-up",
    "bash examples/quickstart.sh": "tests/test_pipeline.py::test_quickstart_runs_on_the_bundled_volume (slow)",
    "uv run pytest": "CI (.ci/run)",
    "uv run python examples/custom_architecture.py train": "tests/test_examples.py::test_custom_architecture_trains_and_predicts (slow, 2 steps)",
    "uv run python examples/custom_architecture.py infer": "tests/test_examples.py::test_custom_architecture_trains_and_predicts (slow)",
    "uv run pytc-train --preview-aug 8": "here: test_augmentation_preview_command_runs",
    "uv run pytc-eval view runs/quickstart/decode/model/test_seg": "tests/browser (a real chromium)",
    "uv run pytc-infer --config examples/infer.toml": "not run: MedNeXt-S for 2000 steps takes hours on a CPU; its configs resolve in tests/test_examples.py",
    "uv run pytc-decode runs/quickstart/test/affinities": "here: test_example_pipeline_runs_on_what_the_quickstart_writes",
    "uv run pytc-infer -c run.ckpt": "placeholder paths (run.ckpt, raw_layer); pytc-infer's tests run the same flags",
    "uv run pytc-launch blocks infer": "placeholder paths; tests/slurm (a real single-node Slurm)",
    "uv run pytc-infer -c banis_best.ckpt": "placeholder checkpoint; packages/pytc-infer foreign-checkpoint tests",
    "uv run pytc-infer -c pytc_v2.ckpt": "placeholder checkpoint; packages/pytc-infer foreign-checkpoint tests",
    "uv run pytc-launch train train.toml": "needs a Slurm cluster; tests/slurm",
    "uv run pytc-launch sweep sweep.toml": "tests/test_examples.py::test_sweep_example_expands_and_dry_runs",
    "uv run pytc-launch status": "placeholder run folder; tests/slurm",
    "uv run pytc-launch resubmit": "placeholder run folder; tests/slurm",
    "uv run pytc-launch blocks decode": "placeholder paths; tests/slurm",
}


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("|"):
                commands.append(line)
            elif line.startswith("|") and commands:  # a pipe continued on the next line
                commands[-1] += " " + line
    return commands


def _section(text: str, title: str) -> str:
    return text.split(f"### {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_every_readme_command_is_run_or_accounted_for():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 15
    unaccounted = [c for c in commands if not any(c.startswith(k) for k in COVERED)]
    assert not unaccounted, f"README commands without a test entry: {unaccounted}"
    stale = [k for k in COVERED if not any(c.startswith(k) for c in commands)]
    assert not stale, f"entries for commands no longer in the README: {stale}"


def _run_readme(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A README command as a user runs it, with this environment's commands for ``uv run``."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command.replace("uv run ", ""), shell=True, executable="/bin/bash",
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def quickstart_outputs(tmp_path):
    """A folder laid out as after the quickstart (``examples/`` beside ``runs/quickstart``),
    with small stand-ins of what it writes: the test region's affinities and the model's
    segmentation, z 175..191, y x 0..64 of the bundled volume (offsets in global voxels)."""
    from pytc_core import create_volume, open_volume
    from pytc_core.targets import affinities_from_labels

    (tmp_path / "examples").symlink_to(ROOT / "examples")
    labels_vol = open_volume(f"{DATA}:labels")
    start = (175, 0, 0)
    labels = labels_vol.read()[175:191, :64, :64].astype(np.uint32)
    aff, _ = affinities_from_labels(labels)
    noisy = np.clip(aff + np.random.default_rng(0).normal(0, 0.2, aff.shape), 0, 1)
    q = tmp_path / "runs" / "quickstart"
    create_volume(str(q / "test" / "affinities"), noisy.shape, np.float32,
                  voxel_size=labels_vol.voxel_size, offset=start).write(
        noisy.astype(np.float32), start)
    create_volume(str(q / "decode" / "model" / "test_seg"), labels.shape, np.uint32,
                  voxel_size=labels_vol.voxel_size, offset=start,
                  layer_type="segmentation").write(labels, start)
    return tmp_path


def test_example_pipeline_runs_on_what_the_quickstart_writes(quickstart_outputs):
    """README "Example pipeline": every command runs as written against the quickstart's
    output layout (its ground truth is the bundled labels, which the quickstart reads; it
    writes none of its own), prints a JSON line per segmentation and the ranked table."""
    section = _section((ROOT / "README.md").read_text(), "Example pipeline")
    commands = readme_commands("\n".join(f"```bash\n{b}```" for b in
                                         re.findall(r"```bash\n(.*?)```", section, re.S)))
    assert commands
    for command in commands:
        result = _run_readme(command, quickstart_outputs)
        assert result.returncode == 0, (command, result.stderr[-2000:])
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["segmentation"].rstrip("/").rsplit("/", 1)[-1] for r in reports] == \
        ["t07", "test_seg"]
    assert all(r["bbox"] == [175, 0, 0, 191, 64, 64] for r in reports)
    truth = reports[1]  # the stand-in segmentation is the ground truth itself
    assert truth["voi_split"] == truth["voi_merge"] == 0.0
    header = result.stderr[result.stderr.index("rank"):].splitlines()[0]
    assert re.search(r"VOI split\s+VOI merge\s+VOI\s+ARAND", header)


def test_augmentation_preview_command_runs(tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    readme = (ROOT / "README.md").read_text()
    command = next(c for c in readme_commands(readme) if c.startswith(
        "uv run pytc-train --preview-aug"))
    result = _run_readme(command, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("aug_preview.h5:image")
    assert (tmp_path / "aug_preview.png").is_file()
