"""The one interface every decode method implements (:class:`DecodeMethod`).

The stage (:mod:`pytc_decode.stage`), the local blockwise loop and the Slurm steps
(:mod:`pytc_decode.steps`) call only this interface, never a method by name:

- **whole volume**: :meth:`DecodeMethod.outputs` (the segmentations one run writes, one per
  option variant: ``ws`` writes one per agglomeration threshold) and
  :meth:`DecodeMethod.segment` (affinities → one label array per output);
- **per block**: :meth:`DecodeMethod.context` (the box a block's labelling reads) and
  :meth:`DecodeMethod.label_block` (→ local labels and a summary, serialised as bytes so a
  Slurm task can hand it to the reduce step);
- **reduce**: :meth:`DecodeMethod.reduce` (every block's summary → per block, a local → final
  id table: :class:`~pytc_decode.blockwise.BlockTables`);
- **relabel**: :meth:`DecodeMethod.relabel` (a block's local labels through its table).

A method's options are its own frozen dataclass (:attr:`DecodeMethod.options_type`), the
TOML table ``[decode.<name>]``; they are part of a run's resume key only when the method is
in use. Arrays are channels first, spatial axes (z, y, x), sizes in voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pytc_core.bbox import BBox

if TYPE_CHECKING:
    from pytc_core.merge_history import MergeHistory
    from pytc_core.volume import Volume
    from pytc_decode.blockwise import BlockTables
    from pytc_decode.config import DecodeConfig

__all__ = ["DecodeMethod", "options_of"]


class DecodeMethod:
    """A decode method: affinities (C, Z, Y, X) → labels (Z, Y, X), whole or block by block.

    Subclasses set :attr:`name` and :attr:`options_type` and implement :meth:`segment`; a
    blockwise method sets :attr:`blockwise` and implements :meth:`label_block` and
    :meth:`reduce` (the other hooks have defaults).
    """

    #: the method's name (``--method``) and its config table (``[decode.<name>]``)
    name: str
    #: the frozen dataclass of its options (every field with a default)
    options_type: type
    #: whether it has the blockwise steps (label → summary, reduce → tables, relabel)
    blockwise: bool = False

    def check(self, cfg: DecodeConfig, aff_vol: Volume) -> None:
        """UserError for options that cannot work (before any data is read)."""

    def outputs(self, cfg: DecodeConfig) -> list[tuple[str, DecodeConfig]]:
        """The segmentations a whole-volume run writes: (URI suffix, that output's config);
        one ``("", cfg)`` for a method that writes one."""
        return [("", cfg)]

    def segment(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                voxel_size: Sequence[float]) -> list[np.ndarray]:
        """Whole volume: one label array per entry of :meth:`outputs`, ids 1..N by first
        voxel in C order, 0 = background."""
        raise NotImplementedError

    #: whole volume: whether it can write its fragments and their merge history
    #: (``--fragments-only``, ``--save-fragments``) and segment them later at any threshold
    fragments_output: bool = False

    def fragments(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                  voxel_size: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Whole volume: (fragments (Z, Y, X) ids 1..N, merge history ``(M, 3)`` rows
        ``(absorbed, into, score)``), for a method with :attr:`fragments_output`."""
        raise NotImplementedError

    def segment_fragments(self, fragments: np.ndarray, history: np.ndarray,
                          affinities: np.ndarray | None, cfg: DecodeConfig) -> list[np.ndarray]:
        """One label array per entry of :meth:`outputs` from :meth:`fragments`' result
        (``affinities`` None when only the stored fragments are at hand)."""
        raise NotImplementedError

    def context(self, block: BBox, volume_box: BBox, cfg: DecodeConfig) -> BBox:
        """The box (global voxels) whose data :meth:`label_block` reads for ``block``."""
        return block

    def label_block(self, affinities: np.ndarray, mask: np.ndarray | None, block: BBox,
                    context: BBox, volume_box: BBox, cfg: DecodeConfig,
                    voxel_size: Sequence[float]) -> tuple[np.ndarray, bytes]:
        """One block from the data of ``context``: (local labels of ``block``, its summary)."""
        raise NotImplementedError

    def reduce(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
               dtype: np.dtype) -> BlockTables:
        """Every block's summary → per block, local id → final id (index 0 → 0)."""
        raise NotImplementedError

    def reduce_outputs(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
                       dtype: np.dtype) -> list[BlockTables]:
        """:meth:`reduce` for each entry of :meth:`outputs` (several thresholds from one
        pass over the summaries, where the method can)."""
        return [self.reduce(summaries, volume_box, cfg, dtype)]

    def reduce_fragments(self, summaries: Sequence[bytes], volume_box: BBox, cfg: DecodeConfig,
                         dtype: np.dtype, **history_fields: Any
                         ) -> tuple[BlockTables, MergeHistory]:
        """Blockwise ``--fragments-only`` (a method with :attr:`fragments_output`): per block,
        local id → global fragment id (1..F by first voxel in C order), and the fragments'
        merge history up to the largest threshold of ``cfg`` (``history_fields``: its other
        fields, e.g. ``thresholds``, ``config``)."""
        raise NotImplementedError

    def relabel(self, labels: np.ndarray, table: np.ndarray) -> np.ndarray:
        """A block's local labels mapped to final ids (a new array)."""
        from pytc_decode.kernels import remap

        return remap(labels, table)


def options_of(cfg: Any, method: DecodeMethod) -> Any:
    """``method``'s options in ``cfg`` (its ``[decode.<name>]`` table)."""
    return getattr(cfg, method.name)
