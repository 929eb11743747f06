"""Sliding windows over a domain, blended with a Gaussian or constant weight map.

The window grid and the weights are MONAI ``sliding_window_inference``'s, so a blockwise run
gives the same numbers as one MONAI pass over the whole domain:

- along each axis (z, y, x) the windows of ``patch`` voxels start every
  ``int(patch * (1 - overlap))`` voxels (at least 1; ``patch`` when the domain is exactly one
  patch long); the last window is shifted back so it ends at the domain's far face, so
  **windows never leave the domain**: voxels near the border are predicted from windows
  that lie inside the volume (less overlap there, no padding);
- a domain shorter than the patch along an axis is zero-padded to the patch, half before
  and half after (MONAI's ``constant`` padding with value 0), and the output cropped;
- the Gaussian weight has sigma ``sigma_scale * patch`` (0.125 by default) per axis, clamped
  below at max(its minimum, 1e-3); every voxel's output is the weighted mean of the
  windows that cover it.

A block of the output needs exactly the windows that intersect it, and its input is the
union of those windows (:meth:`WindowGrid.input_box`): that union is the block's halo.
Windows are numbered in C order, as MONAI does, so blending adds them in the same order.
Coordinates are global voxels (z, y, x); arrays are channels first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pytc_core.bbox import BBox, Vec3

__all__ = [
    "WindowGrid",
    "axis_starts",
    "blend_windows",
    "importance_map",
    "scan_interval",
    "window_grid",
]


def scan_interval(domain_shape: Sequence[int], patch: Sequence[int], overlap: float) -> Vec3:
    """Step between window starts per axis (voxels), MONAI's ``_get_scan_interval``."""
    out = []
    for n, p in zip(domain_shape, patch, strict=True):
        if p == n:
            out.append(int(p))
        else:
            step = int(p * (1 - overlap))
            out.append(step if step > 0 else 1)
    return tuple(out)  # type: ignore[return-value]


def axis_starts(n: int, p: int, step: int) -> list[int]:
    """Window starts along one axis of ``n`` voxels (``n >= p``): MONAI's ``dense_patch_slices``."""
    count = 1
    for d in range(int(np.ceil(n / step))):
        if d * step + p >= n:
            count = d + 1
            break
    return [i * step - max(i * step + p - n, 0) for i in range(count)]


@dataclass(frozen=True)
class WindowGrid:
    """The windows of one sliding-window pass: per-axis global starts, all of ``patch`` size.

    ``domain`` is the region the pass predicts (global voxels); windows may extend past it
    only where the domain is shorter than the patch (zero padding there).
    """

    domain: BBox
    patch: Vec3
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @property
    def count(self) -> int:
        """Number of windows in the whole grid."""
        return int(np.prod([len(s) for s in self.starts]))

    def axis_starts_in(self, box: BBox) -> tuple[tuple[int, ...], ...]:
        """Per axis, the window starts whose windows intersect ``box``."""
        return tuple(tuple(s for s in starts if s < b and s + p > a)
                     for starts, a, b, p in zip(self.starts, box.start, box.stop, self.patch,
                                                strict=True))

    def windows_in(self, box: BBox) -> list[Vec3]:
        """The starts of the windows that intersect ``box``, in C order."""
        return [tuple(w) for w in itertools.product(*self.axis_starts_in(box))]  # type: ignore[misc]

    def input_box(self, box: BBox) -> BBox:
        """The union of the windows that intersect ``box``: the input a block needs."""
        per_axis = self.axis_starts_in(box)
        if any(not s for s in per_axis):
            raise ValueError(f"{box} does not intersect the window grid over {self.domain}")
        return BBox(tuple(min(s) for s in per_axis),
                    tuple(max(s) + p for s, p in zip(per_axis, self.patch, strict=True)))


def window_grid(domain: BBox, patch: Sequence[int], overlap: float) -> WindowGrid:
    """The MONAI window grid over ``domain`` (global voxels) for ``patch`` (z, y, x) and
    ``overlap`` in [0, 1)."""
    patch = tuple(int(p) for p in patch)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded = [max(n, p) for n, p in zip(domain.shape, patch, strict=True)]
    step = scan_interval(padded, patch, overlap)
    starts = []
    for a, n, m, p, s in zip(domain.start, domain.shape, padded, patch, step, strict=True):
        before = (m - n) // 2  # MONAI pads half before, the rest after
        starts.append(tuple(a - before + t for t in axis_starts(m, p, s)))
    return WindowGrid(domain, patch, tuple(starts))  # type: ignore[arg-type]


def importance_map(patch: Sequence[int], mode: str = "gaussian",
                   sigma_scale: float = 0.125) -> np.ndarray:
    """The (Z, Y, X) float32 weight of a window: MONAI's ``compute_importance_map``."""
    patch = tuple(int(p) for p in patch)
    if mode == "constant":
        return np.ones(patch, dtype=np.float32)
    if mode != "gaussian":
        raise ValueError(f"unknown blend mode {mode!r} (gaussian or constant)")
    import torch

    weight = torch.ones(())
    for i, p in enumerate(patch):  # the same float32 torch arithmetic as MONAI (1 * x is exact)
        x = torch.arange(start=-(p - 1) / 2.0, end=(p - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (p * sigma_scale) ** 2))
        weight = weight.unsqueeze(-1) * x[(None,) * i]
    floor = max(torch.min(weight).item(), 1e-3)
    return torch.clamp_(weight.to(torch.float), min=floor).numpy()


def blend_windows(forward: Callable, image: np.ndarray, image_box: BBox, grid: WindowGrid,
                  out_box: BBox, weight: np.ndarray, *, batch_size: int = 1,
                  device: str = "cpu", on_window: Callable[[int], None] | None = None
                  ) -> np.ndarray:
    """Blend the windows of ``grid`` that cover ``out_box`` and return that box's prediction.

    ``image`` (C_in, Z, Y, X) float32 holds the input over ``image_box`` (global voxels), which
    must contain :meth:`WindowGrid.input_box` of ``out_box``. ``forward`` maps a torch batch
    (N, C_in, *patch) to (N, C_out, *patch) (model, activation and TTA included).
    ``weight`` is the window's (Z, Y, X) weight map. Returns (C_out, *out_box.shape) float32.
    """
    import torch

    windows = grid.windows_in(out_box)
    span = grid.input_box(out_box)
    if not image_box.contains(span):
        raise ValueError(f"input {image_box} does not hold the windows' span {span}")
    patch = grid.patch
    src = torch.from_numpy(np.ascontiguousarray(image))
    w = torch.from_numpy(weight).to(device)
    acc = wsum = None
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        x = torch.stack([src[(slice(None), *BBox.from_shape(patch, s).relative_to(image_box.start))]
                         for s in batch]).to(device)
        with torch.inference_mode():
            y = forward(x)
        if acc is None:
            acc = torch.zeros((y.shape[1], *span.shape), dtype=torch.float32, device=device)
            wsum = torch.zeros(span.shape, dtype=torch.float32, device=device)
        assert acc is not None and wsum is not None
        for k, s in enumerate(batch):
            sl = BBox.from_shape(patch, s).relative_to(span.start)
            acc[(slice(None), *sl)].addcmul_(y[k].float(), w)  # += y * w, no temporary
            wsum[sl] += w
        if on_window is not None:
            on_window(len(batch))
    crop = out_box.relative_to(span.start)
    assert acc is not None and wsum is not None  # input_box raised if no window covers out_box
    out = acc[(slice(None), *crop)] / wsum[crop]
    return out.cpu().numpy()
