"""pytc-train: the real --list-archs, and an honest refusal for everything else."""

import subprocess
import sys

import pytest

from pytc_core.cli import run_entry_point
from pytc_train.cli import app

NOT_YET = "pytc-train: error: training is not implemented yet (see the training issue)\n"
NAMES = ["mednext", "mednext/S/k3", "mednext/S/k5", "mednext/B/k3", "mednext/B/k5",
         "mednext/M/k3", "mednext/M/k5", "mednext/L/k3", "mednext/L/k5", "mednext_custom",
         "monai_basic_unet3d", "monai_segresnet", "monai_swin_unetr", "monai_unet",
         "monai_unetr"]


def _table(text):
    rows = {}
    for line in text.strip().splitlines():
        name, params, *_ = line.split()
        rows[name] = int(params.replace(",", ""))
    return rows


def test_list_archs_prints_every_architecture_with_parameter_counts(capsys):
    assert run_entry_point("pytc-train", app, ["--list-archs", "--quiet"]) == 0
    out, err = capsys.readouterr()
    rows = _table(out)
    assert list(rows) == NAMES
    # MedNeXt-S kernel 3: 5,550,881 parameters for 1 -> 1 channels, + 2 x 33 for 3 outputs
    assert rows["mednext"] == rows["mednext/S/k3"] == 5_550_947
    assert rows["mednext/L/k5"] == 62_992_865 + 2 * 33
    assert all(n > 1_000_000 for n in rows.values())
    assert err == ""


def test_list_archs_uses_the_channels_of_the_config(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[model]\narchitecture = 'mednext'\nin_channels = 2\nout_channels = 1\n")
    assert run_entry_point("pytc-train", app, ["--list-archs", "--config", str(config)]) == 0
    rows = _table(capsys.readouterr().out)
    assert rows["mednext/S/k3"] == 5_550_881 + 32  # the 1x1x1 stem reads a second channel
    config.write_text("[model]\nout_channels = 'three'\n")
    assert run_entry_point("pytc-train", app, ["--list-archs", "--config", str(config)]) == 2
    assert "model.out_channels must be a positive integer, got 'three'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["--init-from", "run.ckpt", "--upkern"],
    ["--init-from", "dkfz.pth"],
    ["--config", "run.toml"],
    ["fit", "--list-archs"],
    ["--verbose"],
])
def test_everything_else_says_training_is_not_implemented(argv, capsys):
    assert run_entry_point("pytc-train", app, argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == NOT_YET


def test_missing_config_file_is_a_user_error(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    assert run_entry_point("pytc-train", app, ["--list-archs", "--config", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"pytc-train: error: config file not found: {missing}")


def test_help_says_so_and_does_not_import_torch():
    code = ("import sys\nfrom pytc_core.cli import run_entry_point\nfrom pytc_train.cli import app\n"
            "run_entry_point('pytc-train', app, ['--help'])\n"
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "NOT IMPLEMENTED YET" in out.stdout and "--list-archs" in out.stdout
    assert out.stdout.strip().endswith("TORCH False")


def test_console_script_refuses_to_train():
    result = subprocess.run([sys.executable, "-m", "pytc_train.cli", "--init-from", "x.ckpt"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == NOT_YET
