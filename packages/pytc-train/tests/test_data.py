"""The data module: weighted mixing, foreground resampling, seeded patches, the augmentation hook."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from pytc_core.bbox import BBox
from pytc_train.config import DataConfig, SourceConfig
from pytc_train.data import (
    PatchDataModule,
    PatchIndexSampler,
    TrainPatches,
    ValPatches,
    check_sources,
    grid_starts,
    normalize_raw,
    targets_from_sample,
)


def _pairs(em, *boxes_weights, patch=(16, 16, 16)):
    sources = [SourceConfig(em[0], em[1], box, w) for box, w in boxes_weights]
    return check_sources(sources, patch, 1, "training")


def test_weighted_mixing_matches_the_weights(em_h5):
    """Empirical source frequencies over 3000 patches against weights 0.7 / 0.2 / 0.1 (chi-square)."""
    pairs = _pairs(em_h5, ((0, 0, 0, 16, 48, 48), 0.7), ((16, 0, 0, 32, 48, 48), 0.2),
                   ((0, 0, 0, 32, 24, 24), 0.1))
    ds = TrainPatches(pairs, DataConfig(patch_size=(16, 16, 16), min_foreground=0), seed=1,
                      length=3000)
    counts = np.bincount([ds.draw(i)[0] for i in range(3000)], minlength=3)
    expected = 3000 * np.array([0.7, 0.2, 0.1])
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(0.999, df=2), (counts, statistic)
    # and every patch lies inside its source's box
    for i in range(50):
        s, box, _ = ds.draw(i)
        assert pairs[s].box.contains(box) and box.shape == (16, 16, 16)


def test_foreground_resampling_prefers_labelled_patches(tmp_path):
    """Labels only in one corner: patches are redrawn until >= 30% of voxels are labelled."""
    import h5py

    labels = np.zeros((32, 64, 64), np.uint32)
    labels[:, :20, :20] = 7
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = np.zeros((32, 64, 64), np.uint8)
        f["labels"] = labels
    src = SourceConfig(f"{tmp_path}/v.h5:raw", f"{tmp_path}/v.h5:labels")
    pairs = check_sources([src], (16, 16, 16), 1, "training")
    plain = TrainPatches(pairs, DataConfig(patch_size=(16, 16, 16), min_foreground=0), 0, 200)
    picky = TrainPatches(pairs, DataConfig(patch_size=(16, 16, 16), min_foreground=0.3,
                                           max_resample=50), 0, 200)
    plain_fg = np.array([plain.draw(i)[2] if False else
                         np.count_nonzero(labels[plain.draw(i)[1].slices]) / 16**3
                         for i in range(100)])
    picky_fg = np.array([picky.draw(i)[2] for i in range(100)])
    assert (plain_fg >= 0.3).mean() < 0.2
    assert (picky_fg >= 0.3).mean() > 0.95


def test_patches_are_a_function_of_seed_and_index_whatever_the_workers(em_h5):
    pairs = _pairs(em_h5, ((0, 0, 0, 16, 48, 48), 1.0))
    config = DataConfig(patch_size=(16, 16, 16), offsets=[[-1, 0, 0], [0, -1, 0], [0, 0, -1]])

    def batches(workers, start_step):
        dm = PatchDataModule(config, pairs, [], batch_size=2, num_workers=workers, steps=6, seed=4)
        dm.trainer = None
        loader = dm.train_dataloader()
        loader.sampler.start = start_step * 2
        return [b["image"] for b in loader][:3]

    a, b = batches(0, 0), batches(2, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    resumed = batches(0, 1)  # a run resumed after one step sees the second batch next
    assert torch.equal(resumed[0], a[1])
    other = PatchDataModule(config, pairs, [], batch_size=2, num_workers=0, steps=6, seed=5)
    assert not torch.equal(next(iter(other.train_dataloader()))["image"], a[0])


def test_sampler_splits_indices_across_ranks():
    assert list(PatchIndexSampler(3, 0, 0, 2)) == [0, 2, 4]
    assert list(PatchIndexSampler(3, 1, 1, 2)) == [3, 5, 7]  # resumed after one patch
    assert len(PatchIndexSampler(3, 1, 1, 2)) == 3


def test_targets_and_mask_from_a_hand_made_patch():
    label = np.zeros((2, 2, 3), np.int64)
    label[:, :, :2] = 5
    label[1, 1, 2] = 6
    mask = np.ones((2, 2, 3), np.float32)
    mask[0, 0, 0] = 0
    out = targets_from_sample({"image": np.zeros((1, 2, 2, 3), np.float32), "label": label,
                               "mask": mask}, (2, 2, 3), [[0, 0, -1]])
    target, valid = out["target"][0].numpy(), out["mask"][0].numpy()
    # x-edges (v - 1, v): joined between the two 5s, cut at 5|0 and 5|6, undefined at x = 0
    assert target[:, :, 1].tolist() == [[1, 1], [1, 1]]
    assert target[:, :, 2].tolist() == [[0, 0], [0, 0]]
    assert valid[:, :, 0].sum() == 0
    assert valid[0, 0, 1] == 0 and valid[0, 0, 2] == 1  # the edge touching the masked voxel


def test_transform_hook_gets_the_margin_and_its_output_is_cropped_back(em_h5):
    pairs = _pairs(em_h5, ((0, 8, 8, 32, 40, 40), 1.0))
    seen = {}

    class Flip:
        def __init__(self):
            self.seeds = []

        def set_random_state(self, seed):
            self.seeds.append(seed)

        def __call__(self, sample):
            seen["shape"] = sample["image"].shape
            seen["mask_sum"] = float(sample["mask"].sum())
            return {k: np.ascontiguousarray(v[..., ::-1]) for k, v in sample.items()}

    flip = Flip()
    config = DataConfig(patch_size=(16, 16, 16), min_foreground=0)
    plain = TrainPatches(pairs, config, 0, 10)
    hooked = TrainPatches(pairs, config, 0, 10, transform=flip, read_margin=(2, 4, 4))
    out = hooked[3]
    assert seen["shape"] == (1, 20, 24, 24)
    assert out["image"].shape == (1, 16, 16, 16)
    s, box, _ = plain.draw(3)
    raw = normalize_raw(__import__("pytc_core").open_volume(em_h5[0]).read(box), config)
    assert np.array_equal(out["image"].numpy(), raw[..., ::-1])
    hooked[3]
    assert flip.seeds[0] == flip.seeds[1]  # the augmentation is seeded by the patch index


def test_reads_past_the_volume_edge_are_masked(em_h5):
    pairs = _pairs(em_h5, ((0, 0, 0, 32, 48, 48), 1.0))
    seen = []
    ds = TrainPatches(pairs, DataConfig(patch_size=(16, 16, 16), min_foreground=0), 0, 10,
                      transform=lambda s: seen.append(s) or s, read_margin=(4, 4, 4))
    for i in range(10):
        ds[i]
        s, box, _ = ds.draw(i)
        grown = box.grow(4)
        inside = grown.intersect(BBox((0, 0, 0), (32, 48, 48)))
        assert seen[-1]["mask"].sum() == inside.size


def test_validation_grid_covers_the_box(em_h5):
    assert grid_starts(0, 75, 32) == [0, 32, 43]
    assert grid_starts(10, 26, 16) == [10]
    pairs = check_sources([SourceConfig(em_h5[0], em_h5[1], (16, 0, 0, 32, 48, 48))],
                          (16, 32, 32), 1, "validation")
    ds = ValPatches(pairs, DataConfig(patch_size=(16, 32, 32), val_max_patches=100))
    assert [start for _, start in ds.items] == [(16, y, x) for y in (0, 16) for x in (0, 16)]
    item = ds[0]
    assert item["target"].shape == (3, 16, 32, 32)


@pytest.mark.parametrize("normalize, expected", [("auto", 51 / 255), ("none", 51.0)])
def test_normalisation(normalize, expected):
    x = normalize_raw(np.full((2, 2, 2), 51, np.uint8), DataConfig(normalize=normalize))
    assert x.shape == (1, 2, 2, 2) and x.dtype == np.float32
    assert np.allclose(x, expected)
    x = normalize_raw(np.full((2, 2, 2), 60, np.uint8),
                      DataConfig(normalize="percentile", mean=50.0, std=20.0))
    assert np.allclose(x, 0.5)


def test_validation_batches_never_leave_one_patch_alone():
    from pytc_train.data import validation_batches

    assert validation_batches([0, 2, 4, 6, 8], 2) == [[0, 2], [4, 6, 8]]
    assert validation_batches([1, 3, 5, 7], 2) == [[1, 3], [5, 7]]
    assert validation_batches([0], 2) == [[0]]
    assert validation_batches([0, 1, 2], 1) == [[0], [1], [2]]
    assert validation_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5, 6]]
