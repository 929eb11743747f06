"""Add your own network to pytc: register a builder, then train and predict with it.

``register_architecture(name)`` makes ``architecture = name`` valid wherever pytc reads a
``[model]`` table (``build_model``, ``pytc-train``, checkpoints, ``pytc-infer``) in a process
that imported the registering module. This file registers ``tiny_unet`` and, run as a
script, is ``pytc-train`` or ``pytc-infer`` with it (same flags; from the repository root)::

    uv run python examples/custom_architecture.py train --arch tiny_unet \\
        --raw examples/data/flyem_medulla_250.h5:raw \\
        --labels examples/data/flyem_medulla_250.h5:labels \\
        --bbox 0,0,0,140,250,250 --val-bbox 140,0,0,175,250,250 --max-steps 200 \\
        --run-dir runs/tiny                 # stdout: runs/tiny/checkpoints/best.ckpt
    uv run python examples/custom_architecture.py infer -c runs/tiny/checkpoints/best.ckpt \\
        -i examples/data/flyem_medulla_250.h5:raw --bbox 175,0,0,250,250,250 -o runs/tiny/aff \\
      | uv run pytc-decode - -o runs/tiny/seg

Arrays are (N, C, z, y, x); sizes in voxels.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from pytc_core.models import InputSizeRule, ModelConfig, register_architecture


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.InstanceNorm3d(c_out),
                         nn.LeakyReLU(inplace=True))


class TinyUNet(nn.Module):
    """A two-level 3D U-Net: (N, in, z, y, x) -> (N, out, z, y, x) logits (pytc-train applies
    the sigmoid in its loss, pytc-infer when predicting). Even sizes only (one 2x pooling)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 16) -> None:
        super().__init__()
        self.down = _block(in_channels, width)
        self.bottom = nn.Sequential(nn.MaxPool3d(2), _block(width, 2 * width))
        self.up = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.out = nn.Sequential(_block(2 * width, width), nn.Conv3d(width, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        return self.out(torch.cat([skip, self.up(self.bottom(skip))], dim=1))


@register_architecture("tiny_unet", input_rule=lambda config: InputSizeRule(multiple=2))
def build_tiny_unet(config: ModelConfig) -> nn.Module:
    """Two-level 3D U-Net of width filters[0] (an example of register_architecture)."""
    return TinyUNet(config.in_channels, config.out_channels, config.filters[0])


def main(argv: list[str]) -> int:
    """``train ARGS`` runs pytc-train, ``infer ARGS`` pytc-infer, with tiny_unet registered."""
    from pytc_core.cli import run_entry_point

    if argv[:1] == ["train"]:
        from pytc_train.cli import app as train_app

        return run_entry_point("pytc-train", train_app, argv[1:])
    if argv[:1] == ["infer"]:
        from pytc_infer.cli import app as infer_app

        return run_entry_point("pytc-infer", infer_app, argv[1:])
    sys.stderr.write("usage: custom_architecture.py train|infer [pytc-train|pytc-infer flags]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
