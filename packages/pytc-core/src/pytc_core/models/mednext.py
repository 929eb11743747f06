"""MedNeXt (Roy et al., MICCAI 2023): sizes S/B/M/L, custom configurations, gradient checkpointing.

The default backend (``backend = "monai"``) assembles MONAI's MedNeXt blocks
(``monai.networks.blocks.mednext_block``) in the module layout of
``monai.networks.nets.MedNeXt`` (``stem``, ``enc_stages``, ``down_blocks``, ``bottleneck``,
``up_blocks``, ``dec_stages``, ``out_0``, ``out_blocks``), with the level semantics of the
reference implementation (MIC-DKFZ/MedNeXt, ``nnunet_mednext``): ``exp_r`` and
``block_counts`` are 9-level lists (4 encoder levels, bottleneck, 4 decoder levels), the
down block of level i uses ``exp_r[i + 1]``, encoder and decoder kernels may differ, ``layer``
norm is a channels-first LayerNorm, and ``checkpoint_style = "outside_block"`` recomputes
every block in backward (``torch.utils.checkpoint``, non-reentrant). MONAI's own
``MedNeXt`` class can express none of these four, hence the assembly; its state dict is
interchangeable with ours where the configurations coincide (size S).

``backend = "nnunet_mednext"`` builds DKFZ's own network when that package is installed.
Axis order: input ``(N, C, Z, Y, X)`` (``(N, C, Y, X)`` for ``mednext_dim = "2d"``); every
spatial size must be divisible by 16 (four stride-2 levels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.mednext_block import (
    MedNeXtBlock,
    MedNeXtDownBlock,
    MedNeXtOutBlock,
    MedNeXtUpBlock,
)
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from pytc_core.errors import UserError, unknown_name_error
from pytc_core.models.config import ModelConfig
from pytc_core.models.input_size import InputSizeRule

__all__ = [
    "MEDNEXT_SIZES",
    "ChannelsFirstLayerNorm",
    "MedNeXt",
    "NnunetMedNeXtAdapter",
    "build_mednext",
    "build_mednext_custom",
    "deep_supervision_dict",
    "mednext_input_rule",
    "mednext_kwargs",
]

# The paper's sizes, as in DKFZ's create_mednext_v1 (n_channels = 32, do_res and
# do_res_up_down on). Parameters for 1 → 1 channels: S 5.6M/5.9M (kernel 3/5), B 10.5M/11.0M,
# M 17.6M/18.3M, L 61.8M/63.0M.
MEDNEXT_SIZES: dict[str, dict[str, list[int]]] = {
    "S": {"exp_r": [2] * 9, "block_counts": [2] * 9},
    "B": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "block_counts": [2] * 9},
    "M": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "block_counts": [3, 4, 4, 4, 4, 4, 4, 4, 3]},
    "L": {"exp_r": [3, 4, 8, 8, 8, 8, 8, 4, 3], "block_counts": [3, 4, 8, 8, 8, 8, 8, 4, 3]},
}
DS_KEYS = ("output", "ds_1", "ds_2", "ds_3", "ds_4")


def deep_supervision_dict(outputs: Sequence[Tensor]) -> dict[str, Tensor]:
    """``[full, 1/2, 1/4, 1/8, 1/16]`` → ``{"output", "ds_1", ..., "ds_4"}``."""
    return dict(zip(DS_KEYS, outputs, strict=True))


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``(N, C, *spatial)`` (as DKFZ's ``LayerNorm``)."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.weight.view(shape) * x + self.bias.view(shape)


def _block(cls: type[MedNeXtBlock], cin: int, cout: int, exp_r: int, kernel: int, res: bool,
           norm: str, dim: str, grn: bool) -> MedNeXtBlock:
    block = cls(cin, cout, expansion_ratio=exp_r, kernel_size=kernel,
                use_residual_connection=res, norm_type="group", dim=dim, global_resp_norm=grn)
    if norm == "layer":  # MONAI's "layer" normalises over (C, k, k, k): replace it
        block.add_module("norm", ChannelsFirstLayerNorm(cin))
    return block


class MedNeXt(nn.Module):
    """MedNeXt U-Net: 4 encoder levels, a bottleneck and 4 decoder levels.

    ``exp_r`` and ``block_counts``: 9 entries, levels ``[enc0..enc3, bottleneck, dec3..dec0]``.
    ``forward``: ``(N, C_in, *spatial)`` → ``(N, C_out, *spatial)``; in train mode with
    ``deep_supervision``, a dict of 5 scales (:data:`DS_KEYS`).
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 32,
                 exp_r: int | Sequence[int] = 4, block_counts: Sequence[int] = (2,) * 9,
                 enc_kernel_size: int = 3, dec_kernel_size: int = 3,
                 deep_supervision: bool = False, do_res: bool = True,
                 do_res_up_down: bool = True, checkpoint_style: str | None = None,
                 norm: str = "group", dim: str = "3d", grn: bool = False) -> None:
        super().__init__()
        exp = [exp_r] * 9 if isinstance(exp_r, int) else list(exp_r)
        counts = list(block_counts)
        if len(exp) != 9 or len(counts) != 9:
            raise ValueError("exp_r and block_counts need 9 levels")
        self.deep_supervision = deep_supervision
        self.checkpointing = checkpoint_style == "outside_block"
        self.spatial_dims = 2 if dim == "2d" else 3
        conv = nn.Conv2d if dim == "2d" else nn.Conv3d
        ch = [base_channels * 2**i for i in range(5)]

        def stage(c: int, e: int, k: int, n: int) -> nn.Sequential:
            return nn.Sequential(*[_block(MedNeXtBlock, c, c, e, k, do_res, norm, dim, grn)
                                   for _ in range(n)])

        self.stem = conv(in_channels, ch[0], kernel_size=1)
        self.enc_stages = nn.ModuleList(
            [stage(ch[i], exp[i], enc_kernel_size, counts[i]) for i in range(4)])
        # DKFZ's down_0 has no GRN (its constructor omits the flag); kept for weight parity.
        self.down_blocks = nn.ModuleList(
            [_block(MedNeXtDownBlock, ch[i], ch[i + 1], exp[i + 1], enc_kernel_size,
                    do_res_up_down, norm, dim, grn and i > 0) for i in range(4)])
        self.bottleneck = stage(ch[4], exp[4], dec_kernel_size, counts[4])
        self.up_blocks = nn.ModuleList(
            [_block(MedNeXtUpBlock, ch[4 - i], ch[3 - i], exp[5 + i], dec_kernel_size,
                    do_res_up_down, norm, dim, grn) for i in range(4)])
        self.dec_stages = nn.ModuleList(
            [stage(ch[3 - i], exp[5 + i], dec_kernel_size, counts[5 + i]) for i in range(4)])
        self.out_0 = MedNeXtOutBlock(ch[0], out_channels, dim=dim)
        if deep_supervision:  # out_blocks[i] reads the input of up_blocks[i]: 1/16 ... 1/2
            self.out_blocks = nn.ModuleList(
                [MedNeXtOutBlock(ch[4 - i], out_channels, dim=dim) for i in range(4)])

    def _run(self, module: nn.Module, x: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def _run_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        for block in stage.children():
            x = self._run(block, x)
        return x

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        if x.ndim != self.spatial_dims + 2 or any(s % 16 for s in x.shape[2:]):
            raise UserError(f"MedNeXt input must be (N, C, {'Z, ' * (self.spatial_dims == 3)}Y, X)"
                            f" with spatial sizes divisible by 16, got {tuple(x.shape)}",
                            "use a patch size that is a multiple of 16")
        x = self.stem(x)
        skips = []
        for enc, down in zip(self.enc_stages, self.down_blocks, strict=True):
            x = self._run_stage(enc, x)
            skips.append(x)
            x = self._run(down, x)
        x = self._run_stage(self.bottleneck, x)
        ds = self.deep_supervision and self.training
        coarse: list[Tensor] = []
        for i, (up, dec) in enumerate(zip(self.up_blocks, self.dec_stages, strict=True)):
            if ds:
                coarse.append(self._run(self.out_blocks[i], x))
            x = self._run(up, x) + skips[3 - i]
            x = self._run_stage(dec, x)
        x = self._run(self.out_0, x)
        if ds:
            return deep_supervision_dict([x, *coarse[::-1]])
        return x


class NnunetMedNeXtAdapter(nn.Module):
    """DKFZ's ``nnunet_mednext`` network under pytc's output contract (dict of scales)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        out = self.net(x)
        if isinstance(out, (list, tuple)):
            return deep_supervision_dict(out) if self.training else out[0]
        return out


def _check_kernel(name: str, k: int, allowed: Sequence[int]) -> int:
    if k not in allowed:
        raise UserError(f"model.{name} must be one of {', '.join(map(str, allowed))}, got {k}",
                        "pick one of those")
    return k


def mednext_kwargs(config: ModelConfig, custom: bool) -> dict:
    """Keyword arguments of :class:`MedNeXt` (DKFZ's names mapped) for ``config``, validated."""
    style = config.mednext_checkpoint_style
    if style not in (None, "outside_block"):
        raise UserError(f"model.mednext_checkpoint_style must be 'outside_block' or unset, "
                        f"got {style!r}", "use 'outside_block' to recompute blocks in backward")
    common = {"in_channels": config.in_channels, "out_channels": config.out_channels,
              "deep_supervision": config.deep_supervision, "checkpoint_style": style}
    if not custom:
        size = config.mednext_size.upper()
        if size not in MEDNEXT_SIZES:
            raise unknown_name_error("MedNeXt size", config.mednext_size, MEDNEXT_SIZES)
        k = _check_kernel("mednext_kernel_size", config.mednext_kernel_size, (3, 5))
        return {**common, **MEDNEXT_SIZES[size], "base_channels": 32, "enc_kernel_size": k,
                "dec_kernel_size": k, "do_res": True, "do_res_up_down": True,
                "norm": "group", "dim": "3d", "grn": False}
    exp_r = config.mednext_exp_r
    if isinstance(exp_r, int):
        exp_list = [exp_r] * 9
    else:
        exp_list = list(exp_r)
    if len(exp_list) != 9 or any(e < 1 for e in exp_list):
        raise UserError(f"model.mednext_exp_r must be an int >= 1 or 9 of them, got {exp_r!r}",
                        "e.g. 4 or [2, 3, 4, 4, 4, 4, 4, 3, 2]")
    counts = list(config.mednext_block_counts)
    if len(counts) != 9 or any(c < 1 for c in counts):
        raise UserError(f"model.mednext_block_counts must be 9 ints >= 1, got {counts!r}",
                        "e.g. [2, 2, 2, 2, 2, 2, 2, 2, 2]")
    if config.mednext_base_channels < 1:
        raise UserError("model.mednext_base_channels must be >= 1", "e.g. 32")
    if config.mednext_norm not in ("group", "layer"):
        raise unknown_name_error("MedNeXt norm", config.mednext_norm, ["group", "layer"])
    if config.mednext_dim not in ("2d", "3d"):
        raise unknown_name_error("MedNeXt dim", config.mednext_dim, ["2d", "3d"])
    k = config.mednext_kernel_size
    enc = config.mednext_enc_kernel_size if config.mednext_enc_kernel_size is not None else k
    dec = config.mednext_dec_kernel_size if config.mednext_dec_kernel_size is not None else k
    for name, value in (("mednext_kernel_size", k), ("mednext_enc_kernel_size", enc),
                        ("mednext_dec_kernel_size", dec)):
        _check_kernel(name, value, (3, 5, 7))
    return {**common, "base_channels": config.mednext_base_channels, "exp_r": exp_list,
            "block_counts": counts, "enc_kernel_size": enc, "dec_kernel_size": dec,
            "do_res": config.mednext_do_res, "do_res_up_down": config.mednext_do_res_up_down,
            "norm": config.mednext_norm, "dim": config.mednext_dim, "grn": config.mednext_grn}


def _build(config: ModelConfig, custom: bool) -> nn.Module:
    kwargs = mednext_kwargs(config, custom)
    if config.backend == "monai":
        return MedNeXt(**kwargs)
    if config.backend == "nnunet_mednext":
        return _build_nnunet(config, kwargs, custom)
    raise unknown_name_error("MedNeXt backend", config.backend, ["monai", "nnunet_mednext"])


def _build_nnunet(config: ModelConfig, kw: dict, custom: bool) -> nn.Module:
    try:
        # optional: DKFZ's package (not on PyPI), needed only for backend = 'nnunet_mednext'
        from nnunet_mednext import MedNeXt as DKFZMedNeXt
        from nnunet_mednext import create_mednext_v1  # as above
    except ImportError:
        raise UserError("model.backend = 'nnunet_mednext' needs DKFZ's nnunet_mednext package, "
                        "which is not installed",
                        "install it from github.com/MIC-DKFZ/MedNeXt (not on PyPI) or use "
                        "backend = 'monai'") from None
    if custom:
        net = DKFZMedNeXt(in_channels=kw["in_channels"], n_channels=kw["base_channels"],
                          n_classes=kw["out_channels"], exp_r=kw["exp_r"], kernel_size=None,
                          enc_kernel_size=kw["enc_kernel_size"],
                          dec_kernel_size=kw["dec_kernel_size"],
                          deep_supervision=kw["deep_supervision"], do_res=kw["do_res"],
                          do_res_up_down=kw["do_res_up_down"],
                          checkpoint_style=kw["checkpoint_style"],
                          block_counts=kw["block_counts"], norm_type=kw["norm"],
                          dim=kw["dim"], grn=kw["grn"])
    else:
        net = create_mednext_v1(kw["in_channels"], kw["out_channels"],
                                config.mednext_size.upper(), kernel_size=kw["enc_kernel_size"],
                                deep_supervision=kw["deep_supervision"])
        net.outside_block_checkpointing = kw["checkpoint_style"] == "outside_block"
    return NnunetMedNeXtAdapter(net)


def mednext_input_rule(config: ModelConfig) -> InputSizeRule:
    """MedNeXt has four stride-2 levels: every spatial size a multiple of 16."""
    return InputSizeRule(multiple=16, spatial_dims=2 if config.mednext_dim == "2d" else 3)


def build_mednext(config: ModelConfig) -> nn.Module:
    """MedNeXt of the paper: ``mednext_size`` S/B/M/L, ``mednext_kernel_size`` 3 or 5."""
    return _build(config, custom=False)


def build_mednext_custom(config: ModelConfig) -> nn.Module:
    """MedNeXt with every ``mednext_*`` field under the user's control."""
    return _build(config, custom=True)
