"""The [aug] table and flags through pytc-train: --preview-aug, --aug, bad input, the saved
config, partner patches in the data module."""

from __future__ import annotations

import tomllib

import numpy as np

from pytc_core.cli import run_entry_point
from pytc_core.volume import open_volume
from pytc_train.cli import app


def test_preview_aug_writes_patches_and_png(em_h5, tmp_path, capsys):
    raw, labels = em_h5[0], em_h5[1]
    args = ["--preview-aug", "2", "--aug", "light", "--raw", raw, "--labels", labels,
            "--patch", "16,24,24", "--run-dir", str(tmp_path / "run"), "--quiet"]
    assert run_entry_point("pytc-train", app, args) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{tmp_path / 'run' / 'aug_preview.h5'}:image"
    assert open_volume(out).shape == (16, 24, 3 * 24)
    assert (tmp_path / "run" / "aug_preview.png").stat().st_size > 0
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    # again: refuses to overwrite
    assert run_entry_point("pytc-train", app, args) == 2
    assert "output exists" in capsys.readouterr().err


def test_bad_aug_input_is_one_line_exit_2(em_h5, tmp_path, capsys):
    raw, labels = em_h5[0], em_h5[1]
    base = ["--raw", raw, "--labels", labels, "--patch", "16,16,16", "--run-dir",
            str(tmp_path / "run"), "--max-steps", "1"]
    cases = [
        (["--aug", "heavvy"], "did you mean 'heavy'"),
        (["--set", "aug.misalignment.prob=1.5"], "outside [0, 1]"),
        (["--set", "aug.misalignement.prob=0.5"], "did you mean 'aug.misalignment'"),
        (["--set", "aug.misalignment.max_shift=8"], "too small for aug.misalignment.max_shift"),
        (["--set", "aug.noise.max_std=high"], "aug.noise.max_std"),
    ]
    for extra, message in cases:
        assert run_entry_point("pytc-train", app, base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / "run").exists()


def test_saved_config_has_the_resolved_aug(em_h5, tmp_path, tiny_config):
    import dataclasses

    from pytc_train.augment import AugConfig
    from pytc_train.train import run_train

    config = tiny_config(em_h5, tmp_path, max_steps=1, val_every=1, checkpoint_every=1)
    config = dataclasses.replace(config, aug=AugConfig.from_preset(
        "realistic", misalignment={"prob": 0.9}))
    result = run_train(config, progress_bar=False)
    saved = tomllib.loads((result.run_dir / "pytc_config.toml").read_text())["aug"]
    assert saved["preset"] == "realistic"
    assert saved["misalignment"] == {"prob": 0.9, "max_shift": 4, "stack_prob": 0.5}  # fitted
    assert saved["flip"]["prob"] == 0.5 and saved["elastic"]["prob"] == 0.0


def test_partner_patches_for_mixup_and_copy_paste(em_h5, tmp_path, tiny_config):
    from pytc_train.augment import AugConfig, build_augmentation
    from pytc_train.data import TrainPatches, check_sources

    config = tiny_config(em_h5, tmp_path)
    aug = AugConfig.from_preset("none", copy_paste={"prob": 1.0}, mixup={"prob": 1.0})
    transform, margin = build_augmentation(aug, config.data.patch_size)
    assert transform.needs_partner
    pairs = check_sources(config.data.train_sources(), config.data.patch_size, 1, "training")
    patches = TrainPatches(pairs, config.data, 0, 4, transform, margin)
    a, b = patches[1], patches[1]
    assert set(transform.last_params()) == {"copy_paste", "mixup"}
    assert (a["image"] == b["image"]).all()  # partner drawn from the item's seed: repeatable
    plain = TrainPatches(pairs, config.data, 0, 4)[1]
    assert not np.array_equal(a["image"].numpy(), plain["image"].numpy())
