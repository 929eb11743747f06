"""``--method mws``: mutex watershed on every channel (optional ``mwatershed`` package).

Whole volume only (:func:`pytc_decode.mws.mutex_watershed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pytc_core.errors import UserError
from pytc_decode.methods.base import DecodeMethod
from pytc_decode.methods.cc import check_threshold

if TYPE_CHECKING:
    from pytc_core.volume import Volume
    from pytc_decode.config import DecodeConfig

__all__ = ["MWS", "MwsMethod", "MwsOptions"]


@dataclass(frozen=True)
class MwsOptions:
    """``[decode.mws]``: options of the mutex watershed."""

    #: edges above this attract, edges below repel (weight = affinity - threshold), in [0, 1]
    threshold: float = 0.5
    #: offsets (z, y, x voxels) of the long-range channels 3.., one per channel (the three
    #: nearest-neighbour channels 0-2 are implied)
    long_range_offsets: tuple[tuple[int, int, int], ...] = ()


class MwsMethod(DecodeMethod):
    """Mutex watershed on the nearest-neighbour and long-range channels."""

    name = "mws"
    options_type = MwsOptions

    def check(self, cfg: DecodeConfig, aff_vol: Volume) -> None:
        check_threshold(cfg.mws.threshold)
        n = aff_vol.num_channels or 0
        offsets = cfg.mws.long_range_offsets
        if len(offsets) != n - 3:
            raise UserError(f"--method mws needs the offsets of the {n - 3} long-range channels "
                            f"of {aff_vol.uri}, got {len(offsets)}",
                            "list them in the config, e.g. [decode.mws] long_range_offsets = "
                            "[[-3, 0, 0], [0, -3, 0]]")

    def segment(self, affinities: np.ndarray, mask: np.ndarray | None, cfg: DecodeConfig,
                voxel_size: Sequence[float]) -> list[np.ndarray]:
        from pytc_decode.cc import merge_small, prepare_affinities
        from pytc_decode.mws import mutex_watershed

        t = cfg.mws.threshold
        merge = cfg.small == "merge" and cfg.min_size > 1
        labels = mutex_watershed(affinities, cfg.mws.long_range_offsets, t,
                                 0 if merge else cfg.min_size, mask=mask)
        if merge:
            merge_small(labels, prepare_affinities(affinities[:3], t)[0], cfg.min_size)
        return [labels]


MWS = MwsMethod()
