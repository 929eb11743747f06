"""Reading Lightning checkpoints without torch: the same numbers torch.load gives."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from pytc_launch.ckpt import read_checkpoint
from pytc_launch.status import checkpoint_info

torch = pytest.importorskip("torch")  # to WRITE the test checkpoints


class Opaque:
    """A class the reader must not import or run."""

    def __init__(self, x):
        self.x = x


def test_reads_steps_scores_and_tensors_and_ignores_other_objects(tmp_path):
    key = "ModelCheckpoint{'monitor': 'val/f1', 'mode': 'max', 'every_n_train_steps': 0}"
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"x")
    torch.save({
        "global_step": 1234, "epoch": 2,
        "state_dict": {"model.w": torch.arange(12, dtype=torch.float32).reshape(3, 4)[:, 1:]},
        "callbacks": {key: {"monitor": "val/f1", "best_model_score": torch.tensor(0.8125),
                            "best_model_path": str(tmp_path / "checkpoints" / "best.ckpt")}},
        "half": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "opaque": Opaque(3), "fn": functools.partial(max, 1),
    }, path)
    data = read_checkpoint(path)
    assert data["global_step"] == 1234 and data["epoch"] == 2
    assert float(data["callbacks"][key]["best_model_score"]) == 0.8125
    np.testing.assert_array_equal(data["half"], [1.5, -2.0])
    np.testing.assert_array_equal(data["state_dict"]["model.w"],
                                  np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:])
    assert not isinstance(data["opaque"], Opaque)
    info = checkpoint_info(tmp_path)
    assert (info.step, info.monitor, info.best_score, info.mode) == (1234, "val/f1", 0.8125, "max")
    assert info.best_path == str(tmp_path / "checkpoints" / "best.ckpt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"garbage")
    assert read_checkpoint(tmp_path / "x.ckpt") is None
    assert read_checkpoint(tmp_path / "missing.ckpt") is None
    assert checkpoint_info(tmp_path).step is None


def test_status_takes_the_best_score_from_best_ckpt_and_the_step_from_last(tmp_path):
    """last.ckpt's copy of the best score can lag one validation behind (saved before the
    validation at its step): the best checkpoint's own score is the one to report."""
    key = "ModelCheckpoint{'monitor': 'val/boundary_f1', 'mode': 'max'}"
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name, step, score in (("best.ckpt", 12, 0.0210), ("last.ckpt", 20, 0.0004)):
        torch.save({"global_step": step, "callbacks": {key: {
            "monitor": "val/boundary_f1", "best_model_score": torch.tensor(score),
            "best_model_path": str(ckpts / "best.ckpt")}}}, ckpts / name)
    info = checkpoint_info(tmp_path)
    assert info.step == 20
    assert info.best_score == pytest.approx(0.0210)
    assert info.best_path == str(ckpts / "best.ckpt")
