"""Spatial input sizes a network can take, checked before any tensor reaches it.

Every architecture states its rule (:class:`InputSizeRule`): sizes that are multiples of a
number per axis (the product of its down-sampling strides), or one exact size (UNETR's
fixed patch). :meth:`InputSizeRule.check` turns a size the network cannot take into a
UserError naming the nearest valid sizes, instead of a raw shape error deep in the network.
Sizes are in voxels, spatial axes only, (z, y, x) (or (y, x) for 2D networks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytc_core.errors import UserError

__all__ = ["InputSizeRule"]


@dataclass(frozen=True)
class InputSizeRule:
    """Valid spatial sizes: multiples of ``multiple`` on each axis, or exactly ``exact``."""

    #: every spatial size must be a positive multiple of this (one number for every axis)
    multiple: int = 1
    #: the only size the network takes (voxels, one per axis), or None
    exact: tuple[int, ...] | None = None
    #: number of spatial axes (3 for (z, y, x), 2 for (y, x))
    spatial_dims: int = 3

    def is_valid(self, size: Sequence[int]) -> bool:
        size = tuple(int(s) for s in size)
        if len(size) != self.spatial_dims:
            return False
        if self.exact is not None:
            return size == tuple(self.exact)
        return all(s > 0 and s % self.multiple == 0 for s in size)

    def nearest(self, size: Sequence[int]) -> list[tuple[int, ...]]:
        """The valid sizes next to ``size``: rounded down and up per axis (distinct, sorted)."""
        if self.exact is not None:
            return [tuple(self.exact)]
        m = self.multiple
        down = tuple(max(m, (int(s) // m) * m) for s in size)
        up = tuple(-(-int(s) // m) * m for s in size)
        return sorted({down, up})

    def check(self, size: Sequence[int], architecture: str, what: str = "input") -> None:
        """UserError unless the network ``architecture`` takes spatial size ``size``."""
        size = tuple(int(s) for s in size)
        if self.is_valid(size):
            return
        shown = "x".join(map(str, size))
        if len(size) != self.spatial_dims:
            raise UserError(f"{architecture} takes {self.spatial_dims}D inputs, the {what} is "
                            f"{len(size)}D ({shown})",
                            f"give {self.spatial_dims} spatial sizes")
        options = " or ".join("x".join(map(str, s)) for s in self.nearest(size))
        if self.exact is not None:
            rule = "exactly its model.input_size " + "x".join(map(str, self.exact))
        else:
            rule = f"multiples of {self.multiple} voxels on every axis"
        article = "an" if what[:1] in "aeiou" else "a"
        raise UserError(f"{architecture} cannot take {article} {what} of {shown} voxels: it needs "
                        f"{rule}",
                        f"use {options}")
