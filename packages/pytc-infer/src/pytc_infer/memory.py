"""Memory planning: block size and patch batch from the memory available (host RAM, GPU).

A block's working set is a handful of float32 arrays over its span (the block plus the
halo of the windows that reach into it): the input (twice, with the next block read ahead),
the weighted sum and weight sum, the normalised output and its cast. The model adds its
parameters and the activations of one batch of windows, estimated from the largest layer
output of a forward pass on a small patch, scaled to the patch (x6, for the tensors alive
at once: skip connections, residuals, norm temporaries). The plan takes the largest
chunk-aligned block whose total fits the budget: ``--memory-limit`` when given, else 80 % of
the available host memory (:func:`pytc_core.memory.memory_budget`: the node, the process's
cgroups, Slurm's limit; and of the free GPU memory on CUDA).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytc_core.bbox import BBox, Vec3
from pytc_core.errors import UserError
from pytc_core.memory import format_bytes, memory_budget

__all__ = ["MemoryPlan", "available_memory", "block_bytes", "estimate_activation_bytes",
           "format_bytes", "parse_bytes", "plan_memory"]

log = logging.getLogger("pytc.infer")

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
#: activations alive at once, in units of the largest layer output (see the module docstring)
ACTIVATION_FACTOR = 6
#: share of the available memory a plan uses when no --memory-limit is given
DEFAULT_SHARE = 0.8


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512MB"``, ``"2G"``, ``"1e9"`` → bytes (K/M/G/T are powers of 1000,
    KiB/MiB/GiB/TiB of 1024)."""
    m = _SIZE.match(str(text).replace("_", ""))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        try:
            return int(float(text))
        except ValueError:
            raise UserError(f"bad memory size '{text}'",
                            "write e.g. --memory-limit 8GiB or 512MB") from None
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UserError(f"memory size '{text}' must be positive", "e.g. --memory-limit 8GiB")
    return value


def available_memory() -> int:
    """Host memory available to this process now (bytes): the smallest of the node's
    MemAvailable, the limits of the process's own cgroup and its parents, and Slurm's
    ``SLURM_MEM_PER_NODE`` / ``SLURM_MEM_PER_CPU`` (see :mod:`pytc_core.memory`)."""
    return memory_budget().available


def estimate_activation_bytes(model, in_channels: int, patch: Sequence[int], device: str = "cpu",
                              precision: str = "32") -> int:
    """Bytes of activations for one window of ``patch`` voxels (z, y, x), see the module
    docstring; measured on a 16³ or 32³ patch when the model takes one, else on ``patch``."""
    import torch

    voxels = math.prod(patch)
    largest: list[int] = []

    def hook(_module, _inputs, output) -> None:
        if torch.is_tensor(output):
            largest.append(output.numel() * 4)  # accumulated and blended as float32

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        for probe in ((16, 16, 16), (32, 32, 32), tuple(patch)):
            if math.prod(probe) > voxels:
                continue
            largest.clear()
            try:
                with torch.inference_mode():
                    model(torch.zeros((1, in_channels, *probe), device=device))
            except Exception:  # noqa: BLE001 - the model cannot take this probe size
                if probe == tuple(patch):
                    raise
                continue
            scale = voxels / math.prod(probe)
            return int(ACTIVATION_FACTOR * max(largest, default=0) * scale)
    finally:
        for h in handles:
            h.remove()
    return 0


def block_bytes(span: Sequence[int], in_channels: int, in_itemsize: int, out_channels: int,
                out_itemsize: int) -> int:
    """Host bytes for one block whose windows span ``span`` voxels (z, y, x)."""
    n = math.prod(span)
    per_voxel = (in_channels * (2 * in_itemsize + 4)  # raw (and the next block's) + float
                 + out_channels * 4 + 4                # weighted sum, weight sum
                 + 2 * out_channels * 4                # output, and the one being written
                 + 2 * out_channels * out_itemsize)    # cast, the writer's transposed copies
    return n * per_voxel


@dataclass(frozen=True)
class MemoryPlan:
    """A memory plan: block size (voxels, z, y, x), batch, and the estimated peak bytes."""

    block_size: Vec3
    batch_size: int
    budget: int
    estimate: int
    model_bytes: int
    window_bytes: int

    def line(self) -> str:
        z, y, x = self.block_size
        return (f"blocks of {z}x{y}x{x} voxels, batches of {self.batch_size} windows: about "
                f"{format_bytes(self.estimate)} of a {format_bytes(self.budget)} budget "
                f"(model {format_bytes(self.model_bytes)}, "
                f"{format_bytes(self.window_bytes)} per window)")


def _span(block: int, start: int, stop: int, grid_starts: Sequence[int], p: int,
          origin: int) -> int:
    """The widest span of the windows reaching into the blocks of ``block`` voxels along one
    axis of ``[start, stop)`` (block grid from ``origin``)."""
    widest = 0
    a = origin + ((start - origin) // block) * block
    while a < stop:
        b = min(a + block, stop)
        hit = [s for s in grid_starts if s < b and s + p > max(a, start)]
        if hit:
            widest = max(widest, max(hit) + p - min(hit))
        a += block
    return widest


def plan_memory(box: BBox, grid, chunk: Sequence[int], *, in_channels: int, in_itemsize: int,
                out_channels: int, out_itemsize: int, model_bytes: int, window_bytes: int,
                budget: int, block_size: Sequence[int] | None = None,
                batch_size: int | None = None, cuda: bool = False) -> MemoryPlan:
    """Choose the block size (multiples of ``chunk``, at most ``box``) and the batch.

    ``grid`` is the :class:`~pytc_infer.tiling.WindowGrid` of the run; ``window_bytes`` the
    activations of one window; ``budget`` the bytes the plan may use. A ``block_size`` or
    ``batch_size`` given by the user is kept (and checked against the budget). UserError when
    not even one window fits.
    """
    one_window = model_bytes + window_bytes + block_bytes(grid.patch, in_channels, in_itemsize,
                                                          out_channels, out_itemsize)
    if one_window > budget:
        raise UserError(f"the memory limit {format_bytes(budget)} is too small for one "
                        f"{'x'.join(map(str, grid.patch))} window (about "
                        f"{format_bytes(one_window)} with the model)",
                        "raise --memory-limit, or use a smaller --patch")
    if batch_size is None:
        # on CPU a batch gains nothing over one window at a time; on GPU fill up to a quarter
        batch_size = 1
        if cuda:
            while (batch_size < 16
                   and model_bytes + 2 * batch_size * window_bytes <= budget // 4):
                batch_size *= 2
    fixed = model_bytes + batch_size * window_bytes

    def total(bs: Sequence[int]) -> int:
        span = [_span(b, a, e, s, p, a) for b, a, e, s, p in
                zip(bs, box.start, box.stop, grid.starts, grid.patch, strict=True)]
        return fixed + block_bytes(span, in_channels, in_itemsize, out_channels, out_itemsize)

    if block_size is not None:
        given: Vec3 = (int(block_size[0]), int(block_size[1]), int(block_size[2]))
        return MemoryPlan(given, batch_size, budget, total(given), model_bytes, window_bytes)
    cap = [max(c, math.ceil(n / c) * c) for n, c in zip(box.shape, chunk, strict=True)]
    bs = list(chunk)
    if total(bs) > budget:
        raise UserError(f"the memory limit {format_bytes(budget)} is too small for one block of "
                        f"one chunk ({'x'.join(map(str, chunk))} voxels, about "
                        f"{format_bytes(total(bs))})", "raise --memory-limit")
    grew = True
    while grew:  # grow the smallest axis by one chunk while the plan fits
        grew = False
        for axis in sorted(range(3), key=lambda a: bs[a]):
            if bs[axis] >= cap[axis]:
                continue
            trial = list(bs)
            trial[axis] += chunk[axis]
            if total(trial) <= budget:
                bs = trial
                grew = True
                break
    planned: Vec3 = (bs[0], bs[1], bs[2])
    plan = MemoryPlan(planned, batch_size, budget, total(bs), model_bytes, window_bytes)
    log.debug("memory plan: %s", plan.line())
    return plan
