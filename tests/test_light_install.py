"""A CPU node that only decodes and evaluates installs pytc-core, pytc-decode and pytc-eval
without torch or MONAI (the model zoo is the extra ``pytc-core[models]``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the environment")
def test_decode_and_eval_install_and_run_without_torch(tmp_path):
    uv = shutil.which("uv")
    # the locked versions of what pytc-decode and pytc-eval need, and nothing else
    reqs = subprocess.run([uv, "export", "--frozen", "--no-dev", "--no-emit-workspace",
                           "--no-hashes", "--package", "pytc-decode", "--package", "pytc-eval"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "torch" not in reqs and "monai" not in reqs
    (tmp_path / "requirements.txt").write_text(reqs)
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([uv, "pip", "install", "--quiet", "--python", python, "-r",
                    str(tmp_path / "requirements.txt")], check=True, timeout=600)
    subprocess.run([uv, "pip", "install", "--quiet", "--no-deps", "--python", python,
                    *(str(ROOT / "packages" / p) for p in ("pytc-core", "pytc-decode",
                                                           "pytc-eval"))],
                   check=True, timeout=600)
    probe = subprocess.run([python, "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None, u.find_spec('monai') is None)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["True", "True"]
    bin_dir = venv / "bin"
    help_out = subprocess.run([str(bin_dir / "pytc-decode"), "--help"], capture_output=True,
                              text=True, timeout=120)
    assert help_out.returncode == 0 and "pytc-decode" in help_out.stdout
    # a tiny decode | eval in that environment: two touching objects split by a low plane
    labels = np.zeros((8, 8, 8), np.uint32)
    labels[:4], labels[4:] = 1, 2
    aff = np.ones((3, 8, 8, 8), np.float32)
    aff[0, 4] = 0.0  # z-edges between z=3 and z=4 are off
    np.save(tmp_path / "aff.npy", aff)
    np.save(tmp_path / "gt.npy", labels)
    decode = subprocess.run([str(bin_dir / "pytc-decode"), str(tmp_path / "aff.npy"), "-o",
                             str(tmp_path / "seg.npy")], capture_output=True, text=True,
                            timeout=300)
    assert decode.returncode == 0, decode.stderr
    evaluate = subprocess.run([str(bin_dir / "pytc-eval"), "-", "--gt", str(tmp_path / "gt.npy"),
                               "--json"], input=decode.stdout, capture_output=True, text=True,
                              timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr
    report = json.loads(evaluate.stdout)
    assert report["voi_split"] == report["voi_merge"] == 0.0
    assert report["n_segments"] == 2


def test_model_zoo_without_torch_names_the_extra(tmp_path):
    # the models package refuses with the install hint when torch cannot be imported
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import pytc_core.models\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pytc-core[models]" in out.stdout
