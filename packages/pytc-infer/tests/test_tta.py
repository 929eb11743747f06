"""Flip TTA: affinity channels un-flipped with their offsets; equivariant models unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytc_core.synthetic import synthetic_labels
from pytc_core.targets import affinities_from_labels, long_range_offsets
from pytc_infer import predict
from pytc_infer.tta import flip_sets, tta_forward, unflip


def test_flip_sets():
    assert len(flip_sets("flips")) == 8 and len(flip_sets("flips-xy")) == 4
    assert flip_sets("none") == [()]
    assert all(0 not in axes for axes in flip_sets("flips-xy"))


def test_unflip_by_hand_along_z():
    # labels along z: 1 1 2 2; the z-affinity (edge to the previous voxel) is [0, 1, 0, 1]
    # on the z-flipped input (2 2 1 1) a perfect model also says [0, 1, 0, 1]; flipped back
    # that is [1, 0, 1, 0]: the edge to the *next* voxel. Shifting by the offset (-1) gives
    # [?, 1, 0, 1]: voxel 0's edge leaves the window, so this pass has no value there.
    y = torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 4, 1, 1)
    values, valid = unflip(y, (0,), [(-1, 0, 0)])
    assert values[0, 0, :, 0, 0].tolist()[1:] == [1.0, 0.0, 1.0]
    assert valid[0, :, 0, 0].tolist() == [False, True, True, True]
    # a y flip does not touch the z-affinity; a plain channel is only flipped back
    values, valid = unflip(y, (1,), [(-1, 0, 0)])
    assert values[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 0.0, 1.0] and bool(valid.all())


class LabelAffinities(torch.nn.Module):
    """A perfect affinity 'model': reads its input as labels and returns their affinities."""

    def __init__(self, offsets):
        super().__init__()
        self.offsets = offsets

    def forward(self, x):
        out = [torch.from_numpy(affinities_from_labels(v[0].numpy().astype(np.int64),
                                                       self.offsets)[0]) for v in x]
        return torch.stack(out)


@pytest.mark.parametrize("mode", ["flips", "flips-xy"])
def test_tta_of_a_perfect_affinity_model_gives_the_true_affinities(mode):
    # long-range channels too: every flipped pass, shifted back, predicts exactly the edge
    # each channel names, so the TTA mean is the hand-computed affinity map
    offsets = long_range_offsets((3,))
    labels = synthetic_labels((12, 14, 13), seed=2).astype(np.float32)
    model = LabelAffinities(offsets)
    forward = tta_forward(model, mode, offsets)
    x = torch.from_numpy(labels)[None, None]
    got = forward(x)[0].numpy()
    np.testing.assert_array_equal(got, affinities_from_labels(labels.astype(np.int64), offsets)[0])
    # without un-shifting, the z-flipped pass alone would be wrong somewhere
    flipped = torch.flip(model(torch.flip(x, [2])), [2])[0].numpy()
    assert not np.array_equal(flipped[0], got[0])


class SymmetricConv(torch.nn.Module):
    """Flip-equivariant by construction: a conv with a kernel symmetric in z, y and x."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        k = torch.rand(2, 1, 3, 3, 3)
        k = k + k.flip(2)
        k = k + k.flip(3)
        k = k + k.flip(4)
        self.weight = torch.nn.Parameter(k)

    def forward(self, x):
        return torch.nn.functional.conv3d(x, self.weight, padding=1)


class PairDifference(torch.nn.Module):
    """Flip-equivariant affinities by construction: channel c compares v with v + o_c,
    a symmetric function of the pair (zero beyond the window)."""

    offsets = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))

    def forward(self, x):
        out = []
        for off in self.offsets:
            axis = [a for a in range(3) if off[a]][0] + 2
            shifted = torch.roll(x, shifts=1, dims=axis)
            index = [slice(None)] * 5
            index[axis] = 0
            shifted[tuple(index)] = 0
            out.append(2.0 - 4.0 * (x - shifted).abs())
        return torch.cat(out, 1)


@pytest.mark.parametrize("model,offsets", [(SymmetricConv(), [None, None]),
                                           (PairDifference(), PairDifference.offsets)])
def test_tta_of_a_flip_equivariant_model_equals_no_tta(model, offsets):
    raw = np.random.default_rng(3).random((20, 22, 18)).astype(np.float32)
    plain = predict(model, raw, patch=(16, 16, 16), overlap=0.25, offsets=offsets)
    for mode in ("flips", "flips-xy"):
        tta = predict(model, raw, patch=(16, 16, 16), overlap=0.25, tta=mode, offsets=offsets)
        np.testing.assert_allclose(tta, plain, rtol=0, atol=1e-5)
