"""pytc-decode: affinities to a segmentation (Numba connected components, blockwise decoding).

Arrays are channels first, spatial axes (z, y, x); sizes in voxels.
"""

from pytc_decode.cc import affinity_cc, label_dtype, merge_small, relabel_consecutive

__all__ = ["affinity_cc", "label_dtype", "merge_small", "relabel_consecutive"]
