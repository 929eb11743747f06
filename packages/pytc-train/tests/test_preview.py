"""--preview-aug: the augmented patches and the PNG grid, on a real HDF5 volume in tmp_path."""

from __future__ import annotations

import struct
import zlib

import h5py
import numpy as np
import pytest

from pytc_core.errors import UserError
from pytc_core.volume import open_volume
from pytc_train.augment import AugConfig
from pytc_train.preview import PreviewConfig, label_colors, run_preview, write_png


def make_volume(path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(1, 40, (24, 8, 8)), 6, 1), 6, 2).astype(np.uint16)
    raw = (rng.random(labels.shape) * 100 + (labels % 2) * 120).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f["raw"], f["labels"] = raw, labels
    return raw, labels


def read_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat = data[data.index(b"IDAT") + 4:data.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, 3)


def test_write_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    assert (read_png(write_png(tmp_path / "x.png", rgb)) == rgb).all()
    colors = label_colors(np.array([0, 1, 2, 1]))
    assert (colors[0] == 0).all() and (colors[1] == colors[3]).all()
    assert (colors[1] != colors[2]).any()


@pytest.mark.parametrize("preset", ["light", "realistic"])
def test_preview_writes_patches_and_grid(tmp_path, preset):
    raw, labels = make_volume(tmp_path / "vol.h5")
    cfg = PreviewConfig(raw=f"{tmp_path}/vol.h5:raw", labels=f"{tmp_path}/vol.h5:labels",
                        count=3, patch=(16, 24, 24), output=str(tmp_path / "prev.h5"),
                        aug=AugConfig(preset=preset), seed=1)
    result = run_preview(cfg)
    image, label = open_volume(result.image_uri).read(), open_volume(result.label_uri).read()
    assert image.shape == (16, 24, 4 * 24) and label.shape == (16, 24, 4 * 24)
    box = result.patch_box
    assert box.shape == (16, 24, 24)
    # the first patch is the unaugmented one, exactly as read
    np.testing.assert_allclose(image[..., :24], raw[box.slices] / 255.0, rtol=1e-6)
    assert (label[..., :24] == labels[box.slices]).all()
    assert len(result.fired) == 3
    assert set(np.unique(label)) <= set(np.unique(labels))  # labels stay labels
    png = read_png(result.png)
    assert result.png == tmp_path / "prev.png"
    assert png.shape[0] > 4 * 24 and png.shape[1] > 2 * 24
    # row 0 panel 0 is the unaugmented middle section, scaled by 3
    assert (png[0:72:3, 0:72:3, 0] == png[1:72:3, 1:72:3, 0]).all()
    # the same command again refuses to overwrite; --overwrite replaces
    with pytest.raises(UserError, match="output exists"):
        run_preview(cfg)
    run_preview(PreviewConfig(**{**cfg.__dict__, "overwrite": True}))


def test_preview_bad_input(tmp_path):
    make_volume(tmp_path / "vol.h5")
    base = {"raw": f"{tmp_path}/vol.h5:raw", "labels": f"{tmp_path}/vol.h5:labels",
            "output": str(tmp_path / "p.h5")}
    with pytest.raises(UserError, match="positive number"):
        run_preview(PreviewConfig(**base, count=0))
    with pytest.raises(UserError, match="region is only"):
        run_preview(PreviewConfig(**base, patch=(24, 48, 48)))
    with pytest.raises(UserError, match="too small for aug.misalignment"):
        run_preview(PreviewConfig(**base, patch=(16, 16, 16),
                                  aug=AugConfig.from_preset("realistic",
                                                            misalignment={"max_shift": 6})))
    assert not (tmp_path / "p.h5").exists()
