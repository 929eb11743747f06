"""Test-time augmentation by flips, with affinity channels un-flipped correctly.

Affinity channel c at voxel v is the edge between v and v + o_c (``pytc_core.targets``).
Predicting on an input flipped along the axes A and flipping the output back gives, in
channel c at v, the edge between v and v + R(o_c), where R negates the components of o_c
along A. So:

- R(o) = o (o has no component along A): the channel is already right;
- R(o) = -o (o lies along A, e.g. the z-affinity under a z flip): the flipped pass predicted
  the edge to the *other* neighbour, so the channel is shifted by o: out[c][v] = u[c][v + o].
  Voxels whose v + o lies outside the window get no value from that flip;
- otherwise (a diagonal offset under a partial flip) the flip says nothing about that
  channel.

The TTA result is, per channel and voxel, the mean over the flips that gave a value (the
identity always does). Channels without an offset (foreground, boundary) are plainly
un-flipped. Arrays are (N, C, Z, Y, X) torch tensors; axes (z, y, x) are 0, 1, 2.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

__all__ = ["TTA_MODES", "flip_sets", "tta_forward", "unflip"]

TTA_MODES = ("none", "flips", "flips-xy")


def flip_sets(mode: str) -> list[tuple[int, ...]]:
    """The spatial axes flipped in each pass: ``none`` → [()], ``flips`` → the 8 subsets of
    (z, y, x), ``flips-xy`` → the 4 subsets of (y, x)."""
    if mode == "none":
        return [()]
    axes = {"flips": (0, 1, 2), "flips-xy": (1, 2)}.get(mode)
    if axes is None:
        raise ValueError(f"unknown TTA mode {mode!r} (one of {', '.join(TTA_MODES)})")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def unflip(y, axes: Sequence[int], offsets: Sequence[Sequence[int] | None]):
    """Un-flip the output ``y`` (N, C, Z, Y, X) of a pass on an input flipped along ``axes``.

    ``offsets[c]`` is channel c's affinity offset (z, y, x), or None for a plain channel;
    channels beyond ``len(offsets)`` are plain. Returns ``(values, valid)``: the prediction
    in the original frame and a boolean mask (C, Z, Y, X) of the voxels it covers.
    """
    import torch

    axes = tuple(axes)
    y = torch.flip(y, [a + 2 for a in axes]) if axes else y
    valid = torch.ones(y.shape[1:], dtype=torch.bool, device=y.device)
    if not axes:
        return y, valid
    out = y.clone()
    for c, off in enumerate(offsets):
        if off is None or c >= y.shape[1]:
            continue
        off = tuple(int(v) for v in off)
        mirrored = tuple(-v if a in axes else v for a, v in enumerate(off))
        if mirrored == off:
            continue
        if mirrored != tuple(-v for v in off):  # a diagonal offset under a partial flip
            valid[c] = False
            continue
        out[:, c] = 0
        valid[c] = False
        dst: list[slice] = []
        src: list[slice] = []  # out[c][v] = y[c][v + off] where v + off lies inside
        for n, d in zip(y.shape[2:], off, strict=True):
            if abs(d) >= n:
                break
            dst.append(slice(max(0, -d), n - max(0, d)))
            src.append(slice(max(0, d), n + min(0, d)))
        else:
            out[:, c][(slice(None), *dst)] = y[:, c][(slice(None), *src)]
            valid[c][tuple(dst)] = True
    return out, valid


def tta_forward(forward: Callable, mode: str,
                offsets: Sequence[Sequence[int] | None] = ()) -> Callable:
    """``forward`` averaged over the flips of ``mode`` (see the module docstring); ``forward``
    maps (N, C_in, Z, Y, X) to (N, C_out, Z, Y, X) and includes the output activation."""
    flips = flip_sets(mode)
    if flips == [()]:
        return forward

    def averaged(x):
        import torch

        total = count = None
        for axes in flips:
            xf = torch.flip(x, [a + 2 for a in axes]) if axes else x
            y, valid = unflip(forward(xf).float(), axes, offsets)
            if total is None:
                total = torch.zeros_like(y)
                count = torch.zeros(valid.shape, dtype=torch.float32, device=y.device)
            total += y * valid
            count += valid
        assert total is not None and count is not None  # flips is never empty
        return total / count

    return averaged
