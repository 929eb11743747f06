"""pytc's model zoo (imports torch; ``import pytc_core`` alone stays light).

``build_model(config)`` turns the ``[model]`` table (dict or :class:`ModelConfig`) into a
``torch.nn.Module``: input ``(N, C_in, Z, Y, X)``; eval output ``(N, C_out, Z, Y, X)``; train
output with ``deep_supervision`` a dict ``{"output", "ds_1" (1/2), ..., "ds_4" (1/16)}``.
Architectures: ``mednext``, ``mednext_custom``, ``monai_basic_unet3d``, ``monai_unet``,
``monai_unetr``, ``monai_swin_unetr``, ``monai_segresnet`` (see README.md beside this file).
"""

try:
    import monai  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # a light install (decode/eval only)
    raise ImportError(f"pytc_core.models needs torch and MONAI ({exc}): install the extra, "
                      "pip install 'pytc-core[models]' (pytc-train and pytc-infer bring it)"
                      ) from exc

from pytc_core.models.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint_config,
    load_model_from_checkpoint,
    save_checkpoint,
)
from pytc_core.models.config import ModelConfig, model_config_from_dict, model_config_to_dict
from pytc_core.models.dkfz_weights import dkfz_to_pytc_name, load_nnunet_mednext_weights
from pytc_core.models.input_size import InputSizeRule
from pytc_core.models.mednext import MEDNEXT_SIZES, MedNeXt
from pytc_core.models.registry import (
    Architecture,
    build_model,
    count_parameters,
    describe_architectures,
    get_architecture,
    get_architecture_builder,
    list_architectures,
    register_architecture,
    validate_input_size,
)
from pytc_core.models.upkern import upkern_load_weights

__all__ = [
    "Architecture",
    "CHECKPOINT_FORMAT",
    "InputSizeRule",
    "MEDNEXT_SIZES",
    "MedNeXt",
    "ModelConfig",
    "build_model",
    "count_parameters",
    "describe_architectures",
    "dkfz_to_pytc_name",
    "get_architecture",
    "get_architecture_builder",
    "list_architectures",
    "load_checkpoint_config",
    "load_model_from_checkpoint",
    "load_nnunet_mednext_weights",
    "model_config_from_dict",
    "model_config_to_dict",
    "register_architecture",
    "save_checkpoint",
    "upkern_load_weights",
    "validate_input_size",
]
