"""EM augmentations: each transform checked by what it did, every preset, seeding, bad input."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from pytc_core.config import config_to_toml, resolve_config
from pytc_core.errors import UserError
from pytc_train.augment import (
    TRANSFORM_NAMES,
    AugConfig,
    RandBrightnessd,
    RandContrastd,
    RandCopyPasted,
    RandCutBlurd,
    RandCutNoised,
    RandDefocusd,
    RandElasticd,
    RandFlipd,
    RandGammad,
    RandGaussianNoised,
    RandMisalignmentd,
    RandMissingPartsd,
    RandMissingSectiond,
    RandMixupd,
    RandMotionBlurd,
    RandRot90d,
    RandRotated,
    build_augmentation,
    downsample_upsample_z,
    paste_object,
    preset_names,
    resolve_for_patch,
)
from pytc_train.augment.config import MisalignmentConfig

PATCH = (32, 64, 64)


@dataclass(frozen=True)
class Run:
    """A stage config holding an [aug] table, as TrainConfig does."""

    aug: AugConfig = field(default_factory=AugConfig)


def seeded(t, seed):
    t.set_random_state(seed=seed)
    return t


def random_patch(shape, seed=0, channels=1):
    """Image whose voxel values equal its integer labels (so label <-> image is checkable)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(1, 1000, shape).astype(np.int64)
    return {"image": np.repeat(label[None].astype(np.float32), channels, 0), "label": label}


# --- missing sections ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_missing_section_deletes_and_shifts(seed):
    k, z = 3, 16
    shape = (z + k, 8, 8)
    zz = np.broadcast_to(np.arange(shape[0])[:, None, None], shape)
    d = {"image": (zz[None] + 1).astype(np.float32), "label": (zz + 100).astype(np.int32),
         "mask": np.ones(shape, np.float32)}
    t = seeded(RandMissingSectiond(1.0, k), seed)
    out = t(d)
    deleted = t.params["deleted"]
    assert out["image"].shape == (1, z, 8, 8) and out["label"].shape == (z, 8, 8)
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.int32
    assert 1 <= len(deleted) <= k
    src = out["image"][0, :, 0, 0].astype(int) - 1  # the input section each output came from
    assert (out["image"] == (src + 1)[None, :, None, None]).all()  # whole sections, no blending
    assert not (out["image"] == 0).all(axis=(0, 2, 3)).any()       # deleted, not zero-filled
    assert (np.diff(src) >= 1).all()
    gaps = [s + 1 + j for s, d_ in zip(src[:-1], np.diff(src), strict=True) for j in range(d_ - 1)]
    assert gaps == deleted                                   # exactly the reported sections gone
    assert src[0] < deleted[0] and deleted[-1] < src[-1]     # gaps inside the patch
    assert (out["label"] == (src + 100)[:, None, None]).all()  # labels match section for section
    assert out["mask"].shape == (z, 8, 8)


def test_missing_section_off_crops_centre():
    d = {"image": np.arange(10, dtype=np.float32).reshape(1, 10, 1, 1).repeat(2, 2),
         "label": np.zeros((10, 2, 1), np.int64)}
    out = seeded(RandMissingSectiond(0.0, 4), 0)(d)
    assert out["image"][0, :, 0, 0].tolist() == [2, 3, 4, 5, 6, 7]


# --- misalignment -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_misalignment_shifts_by_reported_offset(seed):
    m, shape = 4, (6, 24 + 8, 20 + 8)
    d = random_patch(shape, seed)
    t = seeded(RandMisalignmentd(1.0, m, stack_prob=0.5), seed)
    out = t(d)
    (z0, z1), (dy, dx) = t.params["sections"], t.params["offset"]
    assert out["image"].shape == (1, 6, 24, 20) and (dy, dx) != (0, 0)
    assert max(abs(dy), abs(dx)) <= m
    ref = d["image"][0, :, m:m + 24, m:m + 20]
    img = out["image"][0]
    untouched = [z for z in range(6) if not z0 <= z < z1]
    assert (img[untouched] == ref[untouched]).all()
    # shifted: out[z, y, x] == ref[z, y - dy, x - dx] wherever both exist
    ys = slice(max(dy, 0), 24 + min(dy, 0))
    xs = slice(max(dx, 0), 20 + min(dx, 0))
    ys_ref = slice(max(-dy, 0), 24 - max(dy, 0))
    xs_ref = slice(max(-dx, 0), 20 - max(dx, 0))
    assert (img[z0:z1, ys, xs] == ref[z0:z1, ys_ref, xs_ref]).all()
    assert not (img[z0:z1] == ref[z0:z1]).all()
    assert (out["label"] == img.astype(np.int64)).all()  # labels shifted identically


def test_misalignment_stack_moves_every_section_above():
    seen = set()
    for seed in range(30):
        t = seeded(RandMisalignmentd(1.0, 2, stack_prob=1.0), seed)
        t(random_patch((5, 12, 12), seed))
        z0, z1 = t.params["sections"]
        assert z1 == 5 and 1 <= z0 < 5
        seen.add(z0)
    assert seen == {1, 2, 3, 4}


# --- flips and rotations ------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_flip_inverse_restores_exactly(seed):
    d = random_patch((5, 6, 7), seed, channels=2)
    t = seeded(RandFlipd(0.5, "zyx"), seed)
    out = t(d)
    back = t.inverse(out)
    assert (back["image"] == d["image"]).all() and (back["label"] == d["label"]).all()
    assert (out["label"] == out["image"][1].astype(np.int64)).all()
    if t.params is not None:
        expected = np.flip(d["label"], t.params["axes"])
        assert (out["label"] == expected).all()


def test_flip_covers_every_axis():
    seen = set()
    for seed in range(20):
        t = seeded(RandFlipd(0.5, "zyx"), seed)
        t(random_patch((3, 3, 3), seed))
        seen.update(t.params["axes"] if t.params else ())
    assert seen == {-3, -2, -1}


@pytest.mark.parametrize("seed", range(6))
def test_rot90_inverse_and_correspondence(seed):
    d = random_patch((4, 6, 6), seed)
    t = seeded(RandRot90d(1.0), seed)
    out = t(d)
    k = t.params["k"]
    assert (out["image"][0] == np.rot90(d["image"][0], k, axes=(1, 2))).all()
    assert (out["label"] == out["image"][0].astype(np.int64)).all()
    back = t.inverse(out)
    assert (back["image"] == d["image"]).all() and (back["label"] == d["label"]).all()


def test_rot90_permutes_isotropic_cube_and_inverts():
    perms, ks = set(), set()
    for seed in range(40):
        d = random_patch((5, 5, 5), seed)
        t = seeded(RandRot90d(1.0, permute_axes=(0, 1, 2)), seed)
        out = t(d)
        perms.add(t.params["perm"])
        ks.add(t.params["k"])
        assert (out["label"] == out["image"][0].astype(np.int64)).all()
        back = t.inverse(out)
        assert (back["image"] == d["image"]).all() and (back["label"] == d["label"]).all()
    assert len(perms) == 6 and ks == {1, 2, 3}


def test_rot90_non_square_plane_only_half_turns():
    for seed in range(10):
        t = seeded(RandRot90d(1.0), seed)
        out = t(random_patch((2, 4, 6), seed))
        assert t.params["k"] == 2 and out["image"].shape == (1, 2, 4, 6)


def ramp(shape):
    """Image channels 0/1 = the voxel's y / x index (linear: interpolation is exact)."""
    z, y, x = shape
    gy, gx = np.meshgrid(np.arange(y), np.arange(x), indexing="ij")
    image = np.stack([np.broadcast_to(gy, shape), np.broadcast_to(gx, shape)]).astype(np.float32)
    return {"image": image, "label": np.broadcast_to(gy, shape).astype(np.int64).copy()}


@pytest.mark.parametrize("seed", range(4))
def test_rotation_maps_points_by_the_reported_angle(seed):
    out_yx = (20, 24)
    t = seeded(RandRotated(1.0, 20.0, out_yx), seed)
    shape = (3, out_yx[0] + t.margin_zyx[1], out_yx[1] + t.margin_zyx[2])
    d = ramp(shape)
    out = t(d)
    assert out["image"].shape == (2, 3, *out_yx)
    a = math.radians(t.params["degrees"])
    gy, gx = np.meshgrid(np.arange(out_yx[0]), np.arange(out_yx[1]), indexing="ij")
    cy, cx = (out_yx[0] - 1) / 2, (out_yx[1] - 1) / 2
    ry, rx = gy - cy, gx - cx
    src_y = (shape[1] - 1) / 2 + math.cos(a) * ry - math.sin(a) * rx
    src_x = (shape[2] - 1) / 2 + math.sin(a) * ry + math.cos(a) * rx
    np.testing.assert_allclose(out["image"][0], np.broadcast_to(src_y, (3, *out_yx)), atol=1e-3)
    np.testing.assert_allclose(out["image"][1], np.broadcast_to(src_x, (3, *out_yx)), atol=1e-3)
    # sampled strictly inside the read (the margin suffices), labels nearest
    assert src_y.min() >= 0 and src_y.max() <= shape[1] - 1
    assert src_x.min() >= 0 and src_x.max() <= shape[2] - 1
    assert (np.abs(out["label"] - out["image"][0]) <= 0.5 + 1e-4).all()


@pytest.mark.parametrize("seed", range(3))
def test_elastic_displaces_by_the_reported_field(seed):
    t = seeded(RandElasticd(1.0, magnitude=3.0, sigma=4.0), seed)
    shape = (2, 16 + t.margin_zyx[1], 18 + t.margin_zyx[2])
    out = t(ramp(shape))
    dy, dx = t.params["dy"], t.params["dx"]
    assert out["image"].shape == (2, 2, 16, 18)
    assert np.abs(dy).max() == pytest.approx(3.0) and np.abs(dx).max() == pytest.approx(3.0)
    o = t.margin_zyx[1] / 2
    gy, gx = np.meshgrid(np.arange(16), np.arange(18), indexing="ij")
    np.testing.assert_allclose(out["image"][0, 1], gy + o + dy, atol=1e-3)
    np.testing.assert_allclose(out["image"][1, 0], gx + o + dx, atol=1e-3)
    assert (np.abs(out["label"] - out["image"][0]) <= 0.5 + 1e-4).all()


# --- section artefacts: affected region changed, the rest untouched -------------------------

def smooth_patch(shape=(8, 24, 24), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((1, *shape), dtype=np.float32)
    label = rng.integers(0, 50, shape).astype(np.uint32)
    return {"image": image, "label": label}


@pytest.mark.parametrize("cls,kwargs", [
    (RandMotionBlurd, {"max_sections": 3, "length": 5}),
    (RandDefocusd, {"max_sections": 3, "max_sigma": 2.0}),
])
@pytest.mark.parametrize("seed", range(3))
def test_section_blur_touches_only_its_sections(cls, kwargs, seed):
    d = smooth_patch(seed=seed)
    t = seeded(cls(1.0, **kwargs), seed)
    out = t(d)
    sections = t.params["sections"]
    others = [z for z in range(8) if z not in sections]
    assert (out["image"][:, others] == d["image"][:, others]).all()
    for z in sections:
        assert np.abs(out["image"][:, z] - d["image"][:, z]).mean() > 0.05
        assert out["image"][:, z].std() < d["image"][:, z].std()  # blurred: less variance
    assert (out["label"] == d["label"]).all()


def test_motion_blur_is_a_line_average():
    d = smooth_patch((3, 16, 16))
    t = seeded(RandMotionBlurd(1.0, 1, 3), 0)
    out = t(d)
    (z,), (axis,) = t.params["sections"], t.params["axes"]
    src = d["image"][0, z]
    got = out["image"][0, z]
    if axis == -1:
        np.testing.assert_allclose(got[5, 5], src[5, 4:7].mean(), rtol=1e-5)
    else:
        np.testing.assert_allclose(got[5, 5], src[4:7, 5].mean(), rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_missing_parts_blanks_region_and_masks_loss(seed):
    d = smooth_patch(seed=seed)
    d["image"] += 0.5  # nothing is 0 before
    t = seeded(RandMissingPartsd(1.0, 2, 0.3, fill=0.0, mask_loss=True), seed)
    out = t(d)
    sections, regions = t.params["sections"], t.params["regions"]
    blank = np.zeros((8, 24, 24), bool)
    for z, r in zip(sections, regions, strict=True):
        blank[z] = r
        assert 0.3 / 4 - 0.01 <= r.mean() <= 0.3 + 0.01
    assert blank.any()
    assert (out["image"][0][blank] == 0).all()
    assert (out["image"][0][~blank] == d["image"][0][~blank]).all()
    assert out["mask"].dtype == np.uint8 and (out["mask"] == ~blank).all()
    assert (out["label"] == d["label"]).all()


def test_missing_parts_always_adds_mask_when_masking():
    out = seeded(RandMissingPartsd(0.0, 1, 0.3, 0.0, True), 0)(smooth_patch())
    assert (out["mask"] == 1).all() and out["mask"].shape == (8, 24, 24)
    assert "mask" not in seeded(RandMissingPartsd(0.0, 1, 0.3, 0.0, False), 0)(smooth_patch())


def test_downsample_upsample_z_by_hand():
    block = np.array([0, 0, 2, 2], np.float32).reshape(4, 1, 1)
    assert downsample_upsample_z(block, 2).ravel().tolist() == [0, 0.5, 1.5, 2]
    # ragged last group: means 1 (at z 0.5), 5 (at 2.5), 8 (the lone section 4);
    # interpolating between them restores the interior of the ramp
    block = np.array([0, 2, 4, 6, 8], np.float32).reshape(5, 1, 1)
    assert downsample_upsample_z(block, 2).ravel().tolist() == pytest.approx([1, 2, 4, 6, 8])


@pytest.mark.parametrize("cls,kwargs", [
    (RandCutBlurd, {"max_factor": 3, "whole_prob": 0.0}),
    (RandCutNoised, {"max_std": 0.2}),
])
@pytest.mark.parametrize("seed", range(4))
def test_cut_transforms_touch_only_their_box(cls, kwargs, seed):
    d = smooth_patch((12, 20, 20), seed)
    t = seeded(cls(1.0, **kwargs), seed)
    out = t(d)
    (z0, z1), (y0, y1), (x0, x1) = t.params["box"]
    inside = np.zeros((12, 20, 20), bool)
    inside[z0:z1, y0:y1, x0:x1] = True
    assert (out["image"][0][~inside] == d["image"][0][~inside]).all()
    assert np.abs(out["image"][0][inside] - d["image"][0][inside]).mean() > 0.05
    assert (out["label"] == d["label"]).all()
    if cls is RandCutBlurd:
        f = t.params["factor"]
        block = d["image"][:, z0:z1, y0:y1, x0:x1]
        np.testing.assert_allclose(out["image"][:, z0:z1, y0:y1, x0:x1],
                                   downsample_upsample_z(block, f), rtol=1e-6)


def test_cut_blur_whole_patch():
    d = smooth_patch((8, 10, 10))
    t = seeded(RandCutBlurd(1.0, 2, whole_prob=1.0), 0)
    out = t(d)
    assert t.params["box"] == ((0, 8), (0, 10), (0, 10))
    np.testing.assert_allclose(out["image"], downsample_upsample_z(d["image"], 2))


# --- intensity ----------------------------------------------------------------------------

def test_intensity_transforms_by_their_parameters():
    d = smooth_patch((4, 16, 16))
    t = seeded(RandBrightnessd(1.0, 0.1, per_section=True), 0)
    out = t(d)
    diff = out["image"][0] - d["image"][0]
    np.testing.assert_allclose(diff, np.broadcast_to(t.params["offset"], diff.shape), atol=1e-6)
    assert len(set(np.round(diff[:, 0, 0], 6))) == 4  # one offset per section

    t = seeded(RandContrastd(1.0, 0.3, per_section=False), 0)
    out = t(d)
    c = float(t.params["factor"].ravel()[0])
    mean = d["image"].mean()
    np.testing.assert_allclose(out["image"], (d["image"] - mean) * c + mean, atol=1e-5)

    t = seeded(RandGammad(1.0, 0.5), 0)
    out = t(d)
    lo, hi = d["image"].min(), d["image"].max()
    expected = lo + (hi - lo) * ((d["image"] - lo) / (hi - lo)) ** t.params["gamma"]
    np.testing.assert_allclose(out["image"], expected, atol=1e-5)

    t = seeded(RandGaussianNoised(1.0, 0.2), 0)
    out = t(d)
    assert np.std(out["image"] - d["image"]) == pytest.approx(t.params["std"], rel=0.05)
    for o in (out,):
        assert (o["label"] == d["label"]).all() and o["image"].dtype == np.float32


# --- mixup and copy-paste -----------------------------------------------------------------

def test_mixup_blends_images_keeps_labels():
    a, b = smooth_patch(seed=1), smooth_patch(seed=2)
    t = seeded(RandMixupd(1.0, 0.3), 0)
    t.give_partner(b["image"], b["label"])
    out = t(a)
    r = t.params["ratio"]
    assert 0.05 <= r <= 0.3
    np.testing.assert_allclose(out["image"], (1 - r) * a["image"] + r * b["image"], rtol=1e-6)
    assert out["image"].dtype == np.float32 and out["image"].shape == a["image"].shape
    assert (out["label"] == a["label"]).all()
    # without a partner it uses the last patch it saw
    t2 = seeded(RandMixupd(1.0, 0.3), 0)
    first = t2(b)
    assert t2.params is None and (first["image"] == b["image"]).all()
    t2(a)
    assert t2.params is not None


def blobs(shape, ids, seed):
    """Labels of a few boxes with given ids on background 0; image = id / 10."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint16)
    for i in ids:
        z, y, x = (int(rng.integers(0, s - 4)) for s in shape)
        label[z:z + 4, y:y + 5, x:x + 5] = i
    return {"image": (label[None] / 10).astype(np.float32), "label": label}


def test_paste_object_gets_an_unused_id():
    a, b = blobs((8, 16, 16), [1, 2, 3], 0), blobs((8, 16, 16), [1, 2, 3], 1)
    image, label, new = paste_object(a["image"], a["label"], b["image"], b["label"], 2)
    region = b["label"] == 2
    assert new == 4 and label.dtype == np.uint16 and image.shape == a["image"].shape
    assert (label[region] == 4).all() and (label[~region] == a["label"][~region]).all()
    assert not (a["label"] == 4).any()
    assert (image[:, region] == b["image"][:, region]).all()
    assert (image[:, ~region] == a["image"][:, ~region]).all()
    full = {"image": a["image"], "label": np.full((8, 16, 16), 65535, np.uint16)}
    full["label"][0, 0, 0] = 1
    _, lab2, new2 = paste_object(full["image"], full["label"], b["image"], b["label"], 2)
    assert new2 == 2 and (lab2 == 2).sum() == region.sum()  # dtype full at the top


@pytest.mark.parametrize("seed", range(4))
def test_copy_paste_ids_unique(seed):
    a, b = blobs((8, 16, 16), [5, 9], seed), blobs((8, 16, 16), [5, 7], seed + 10)
    t = seeded(RandCopyPasted(1.0, min_voxels=10), seed)
    t.give_partner(b["image"], b["label"])
    out = t(a)
    src = t.params["source_id"]
    region = b["label"] == src
    assert src in (5, 7)
    assert set(np.unique(out["label"][region])) == {t.new_id}
    assert not (out["label"][~region] == t.new_id).any()  # the pasted id is used nowhere else
    assert t.new_id not in np.unique(a["label"])
    assert out["label"].dtype == np.uint16 and out["image"].shape == a["image"].shape


# --- presets, pipeline, seeding -----------------------------------------------------------

def read_patch(margin, seed, shape=PATCH):
    read = tuple(p + 2 * m for p, m in zip(shape, margin, strict=True))
    rng = np.random.default_rng(seed)
    label = np.repeat(np.repeat(np.repeat(rng.integers(1, 30, (read[0], read[1] // 8 + 1,
                                                               read[2] // 8 + 1)),
                                          8, 1), 8, 2), 1, 0)[:, :read[1], :read[2]]
    return {"image": rng.random((1, *read), dtype=np.float32),
            "label": np.ascontiguousarray(label).astype(np.int64),
            "mask": np.ones(read, np.float32)}


@pytest.mark.parametrize("preset", [p for p in preset_names() if p != "none"])
def test_every_preset_on_a_32x64x64_patch(preset):
    t, margin = build_augmentation(AugConfig(preset=preset), PATCH, seed=3)
    assert t is not None and t.margin_zyx == margin
    for i in range(6):
        d = read_patch(margin, i)
        if t.needs_partner:
            p = read_patch(margin, 100 + i)
            d["partner_image"], d["partner_label"] = p["image"], p["label"]
        out = t(d)
        assert out["image"].shape == (1, *PATCH) and out["image"].dtype == np.float32
        assert out["label"].shape == PATCH and out["label"].dtype == np.int64
        assert out["mask"].shape == PATCH
        assert np.isfinite(out["image"]).all()
        assert "partner_image" not in out
    assert set(t.last_params()) <= {name for name, _ in t.transforms}


def test_every_transform_at_once_on_a_32x64x64_patch():
    tables = {n: {"prob": 1.0} for n in TRANSFORM_NAMES}
    tables["missing_parts"]["mask_loss"] = True
    cfg = AugConfig.from_preset("heavy", **tables)
    t, margin = build_augmentation(cfg, PATCH, seed=0)
    d, p = read_patch(margin, 0), read_patch(margin, 1)
    d["partner_image"], d["partner_label"] = p["image"], p["label"]
    out = t(d)
    assert set(t.last_params()) == set(TRANSFORM_NAMES)
    assert out["image"].shape == (1, *PATCH) and out["label"].shape == PATCH
    assert out["mask"].shape == PATCH and (out["mask"] == 0).any()


def test_none_preset_disables():
    assert build_augmentation(AugConfig(preset="none"), PATCH) == (None, (0, 0, 0))


def test_seeded_runs_repeat():
    def run(seed):
        t, margin = build_augmentation(AugConfig(preset="heavy"), PATCH)
        outs = []
        for i in range(4):
            t.set_random_state(seed=seed + i)  # per item, as pytc-train's data module does
            d = read_patch(margin, i)
            p = read_patch(margin, 50 + i)
            d["partner_image"], d["partner_label"] = p["image"], p["label"]
            outs.append(t(d))
        return outs

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        assert (x["image"] == y["image"]).all() and (x["label"] == y["label"]).all()
    assert any((x["image"] != y["image"]).any() for x, y in zip(a, c, strict=True))


def test_pipeline_takes_torch_and_larger_reads():
    cfg = AugConfig.from_preset("realistic", misalignment={"prob": 1.0},
                                missing_section={"prob": 1.0})
    t, margin = build_augmentation(cfg, (16, 32, 32), seed=0)
    assert margin == (1, 6, 6)  # 2 deleted sections -> 1 per side; 2 x 6 shift
    d = read_patch(margin, 0, (16 + 1, 32 + 1, 32))  # 1 voxel more than needed in z and y
    d = {k: torch.from_numpy(v) for k, v in d.items()}
    out = t(d)
    assert isinstance(out["image"], torch.Tensor) and tuple(out["image"].shape) == (1, 16, 32, 32)
    assert out["label"].dtype == torch.int64
    assert {"misalignment", "missing_section"} <= set(t.last_params())
    with pytest.raises(ValueError, match="at least"):
        t(read_patch((0, 0, 0), 0, (16, 32, 32)))


def test_preset_values_fit_small_patches():
    r = resolve_for_patch(AugConfig(preset="heavy"), (8, 16, 16))
    assert r.misalignment.max_shift == 4 and r.missing_section.max_sections == 2
    assert r.elastic.magnitude == 4.0 and r.cut_blur.max_factor == 4
    r = resolve_for_patch(AugConfig(preset="heavy", misalignment=MisalignmentConfig(prob=0.5)),
                          (2, 8, 8))
    assert r.misalignment.prob == 0.5 and r.misalignment.max_shift == 2
    assert r.missing_section.prob == 0.0 and r.cut_blur.prob == 0.0  # 2 sections: no room
    t, margin = build_augmentation(AugConfig(preset="heavy"), (8, 16, 16), seed=0)
    out = t(read_patch(margin, 0, (8, 16, 16)))
    assert out["image"].shape == (1, 8, 16, 16)


def test_permutation_only_for_isotropic_cubes():
    cfg = AugConfig.from_preset("light", rot90={"prob": 1.0})
    t, _ = build_augmentation(cfg, (16, 16, 16), voxel_size_zyx=(8, 8, 8))
    rot = dict(t.transforms)["rot90"]
    assert rot.permute_axes == (0, 1, 2)
    t, _ = build_augmentation(cfg, (16, 16, 16), voxel_size_zyx=(40, 8, 8))
    assert dict(t.transforms)["rot90"].permute_axes == ()
    t, _ = build_augmentation(cfg, (16, 16, 16))
    assert dict(t.transforms)["rot90"].permute_axes == ()


# --- config -------------------------------------------------------------------------------

def test_config_resolves_preset_then_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[aug]\npreset = "heavy"\n[aug.misalignment]\nmax_shift = 3\n')
    cfg = resolve_config(Run, toml, text_overrides={"aug.misalignment.prob": "0.4"}).aug
    r = cfg.resolved()
    assert cfg.preset == "heavy" and r.misalignment.prob == 0.4 and r.misalignment.max_shift == 3
    assert r.elastic.prob == 0.3  # from the preset
    assert r.resolved() == r      # idempotent
    # the saved, resolved config reads back to the same thing
    saved = tmp_path / "saved.toml"
    saved.write_text(config_to_toml(Run(aug=r)))
    assert resolve_config(Run, saved).aug == r
    assert AugConfig().resolved().preset == "realistic"
    assert AugConfig(preset="none").enabled() == []


@pytest.mark.parametrize("text,match", [
    ('[aug]\npreset = "heavvy"', "did you mean 'heavy'"),
    ("[aug.misalignement]\nprob = 0.1", "did you mean 'aug.misalignment'"),
    ("[aug.misalignment]\nprobb = 0.1", "did you mean 'aug.misalignment.prob'"),
    ("[aug.misalignment]\nprob = 1.5", r"outside \[0, 1\]"),
    ("[aug.noise]\nprob = -0.1", r"outside \[0, 1\]"),
    ('[aug.misalignment]\nmax_shift = "big"', "must be"),
    ("[aug.misalignment]\nmax_shift = 2.5", "must be"),
    ('[aug.flip]\naxes = "zq"', "distinct axes"),
    ("[aug.missing_parts]\nmask_loss = 1", "must be"),
])
def test_bad_config_is_one_line_user_error(tmp_path, text, match):
    toml = tmp_path / "bad.toml"
    toml.write_text(text + "\n")
    with pytest.raises(UserError, match=match) as info:
        resolve_config(Run, toml)
    assert "\n" not in str(info.value)


def test_bad_python_config_and_small_patch():
    with pytest.raises(UserError, match="did you mean 'realistic'"):
        AugConfig(preset="realistc")
    with pytest.raises(UserError, match="did you mean 'defocus'"):
        AugConfig.from_preset("light", defocuss={"prob": 0.5})
    with pytest.raises(UserError, match=r"outside \[0, 1\]"):
        AugConfig.from_preset("light", flip={"prob": 2})
    with pytest.raises(UserError, match="must be a number"):
        AugConfig.from_preset("light", flip={"prob": "0.5"})
    with pytest.raises(UserError, match="too small for aug.misalignment.max_shift = 6"):
        build_augmentation(AugConfig.from_preset("realistic", misalignment={"max_shift": 6}),
                           (32, 16, 16))
    with pytest.raises(UserError, match="too small for aug.missing_section.max_sections"):
        build_augmentation(AugConfig.from_preset("light", missing_section={"max_sections": 2,
                                                                           "prob": 0.1}),
                           (4, 64, 64))
    with pytest.raises(UserError, match="3 positive integers"):
        build_augmentation(AugConfig(), (32, 64))


def test_pipeline_pickles_for_worker_processes():
    import pickle

    t, margin = build_augmentation(AugConfig(preset="realistic"), PATCH, seed=0)
    copy = pickle.loads(pickle.dumps(t))
    d = read_patch(margin, 0)
    t.set_random_state(seed=5)
    copy.set_random_state(seed=5)
    a, b = t(dict(d)), copy(dict(d))
    assert (a["image"] == b["image"]).all() and (a["label"] == b["label"]).all()


# --- label ids through geometric warps ------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("make", [lambda: RandRotated(1.0, 20.0, (20, 24)),
                                  lambda: RandElasticd(1.0, magnitude=3.0, sigma=4.0)],
                         ids=["rotate", "elastic"])
def test_ids_near_2_63_stay_distinct_through_a_warp(make, seed):
    """Two touching objects 2^63-2 | 2^63-1 (one float64 value) keep their own ids, each on
    its own side of the (warped) boundary, and no other id appears."""
    t = seeded(make(), seed)
    shape = (2, 20 + t.margin_zyx[1], 24 + t.margin_zyx[2])
    a, b = np.uint64(2**63 - 2), np.uint64(2**63 - 1)
    assert float(a) == float(b)  # why the float64 path merges them
    gy, gx = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    label = np.broadcast_to(np.where(gx < shape[2] // 2, a, b), shape).astype(np.uint64)
    image = np.broadcast_to((gx < shape[2] // 2).astype(np.float32), (1, *shape)).copy()
    out = t({"image": image, "label": label})
    assert out["label"].dtype == np.uint64
    assert set(np.unique(out["label"]).tolist()) == {int(a), int(b)}
    # nearest-neighbour: where the (linearly warped) image is clearly 1 or 0, the label is a/b
    sure_a, sure_b = out["image"][0] > 0.99, out["image"][0] < 0.01
    assert (out["label"][sure_a] == a).all() and (out["label"][sure_b] == b).all()
    assert sure_a.any() and sure_b.any()


def test_warp_ids_keeps_every_uint64_id():
    from pytc_train.augment.geometric import warp_ids

    ids = np.array([[[0, 2**64 - 1, 864691135000000001, 864691135000000002]]], dtype=np.uint64)
    same = warp_ids(ids, lambda v: ndimage_shift0(v))
    np.testing.assert_array_equal(same, ids)


def ndimage_shift0(v):
    from scipy import ndimage

    return ndimage.affine_transform(v, np.eye(3), order=0, mode="nearest")
