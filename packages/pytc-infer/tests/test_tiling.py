"""The window grid, weights and blockwise blending equal MONAI's sliding_window_inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from pytc_core.bbox import BBox
from pytc_core.blocks import plan_blocks
from pytc_infer.tiling import axis_starts, blend_windows, importance_map, scan_interval, window_grid


@pytest.mark.parametrize("n,p,overlap", [(40, 16, 0.25), (37, 16, 0.5), (16, 16, 0.25),
                                         (100, 24, 0.0), (33, 8, 0.9), (64, 64, 0.25)])
def test_window_starts_are_monais(n, p, overlap):
    step = scan_interval((n,), (p,), overlap)
    assert step == _get_scan_interval((n,), (p,), 1, (overlap,))
    monai_starts = [s[0].start for s in dense_patch_slices((n,), (p,), step)]
    assert axis_starts(n, p, step[0]) == monai_starts


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_importance_map_is_monais(mode):
    ours = importance_map((16, 12, 20), mode)
    theirs = compute_importance_map((16, 12, 20), mode=mode).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_windows_stay_inside_the_domain_and_cover_it():
    grid = window_grid(BBox((5, 0, 3), (45, 30, 40)), (16, 16, 16), 0.25)
    assert grid.starts[0] == (5, 17, 29)  # 40 voxels: steps of 12, the last shifted back to end at 45
    assert grid.starts[1] == (0, 12, 14) and grid.starts[2] == (3, 15, 24)
    assert grid.count == 27
    for axis in range(3):
        assert min(grid.starts[axis]) == grid.domain.start[axis]
        assert max(grid.starts[axis]) + 16 == grid.domain.stop[axis]
    # a block needs exactly the windows reaching into it; its input is their union (the halo)
    block = BBox((5, 0, 3), (21, 16, 19))
    assert grid.input_box(block) == BBox((5, 0, 3), (33, 30, 31))


def _conv_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Sigmoid()).eval()


@pytest.mark.parametrize("shape,patch,overlap,mode,block", [
    ((40, 37, 50), (16, 16, 16), 0.25, "gaussian", 16),  # 3x3x4 blocks
    ((30, 33, 28), (16, 8, 16), 0.5, "constant", 12),
    ((10, 30, 33), (16, 16, 16), 0.25, "gaussian", 8),  # z shorter than the patch: zero padded
])
def test_blockwise_blending_equals_one_monai_pass(shape, patch, overlap, mode, block):
    net = _conv_model()
    image = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    with torch.no_grad():
        expected = sliding_window_inference(torch.from_numpy(image)[None], patch, 3, net,
                                            overlap=overlap, mode=mode)[0].numpy()
    domain = BBox.from_shape(shape)
    grid = window_grid(domain, patch, overlap)
    weight = importance_map(patch, mode)
    out = np.full_like(expected, np.nan)
    blocks = plan_blocks(domain, block)
    assert len(blocks) >= 8
    for b in blocks:
        span = grid.input_box(b)
        inside = span.intersect(domain)
        data = np.zeros((1, *span.shape), np.float32)  # zeros beyond the domain (padding)
        data[(slice(None), *inside.relative_to(span.start))] = image[(slice(None), *inside.slices)]
        out[(slice(None), *b.slices)] = blend_windows(net, data, span, grid, b, weight,
                                                      batch_size=2)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
