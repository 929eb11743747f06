"""Registry contract: names, unknown-name errors, config tables, every architecture runs."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from pytc_core.errors import UserError
from pytc_core.models import (
    ModelConfig,
    build_model,
    count_parameters,
    get_architecture_builder,
    list_architectures,
    model_config_from_dict,
    model_config_to_dict,
    register_architecture,
)
from pytc_core.models import registry as registry_module

BUILTIN = ["mednext", "mednext_custom", "monai_basic_unet3d", "monai_segresnet",
           "monai_swin_unetr", "monai_unet", "monai_unetr"]


def test_builtin_architectures_are_registered():
    assert [a for a in list_architectures() if a in BUILTIN] == BUILTIN


def test_unknown_architecture_lists_known_ones_and_closest_match():
    with pytest.raises(UserError) as exc:
        get_architecture_builder("mednxt")
    assert exc.value.what == "unknown architecture 'mednxt'"
    assert exc.value.fix.startswith("did you mean 'mednext'? valid: ")
    for name in BUILTIN:
        assert name in exc.value.fix
    with pytest.raises(UserError, match="unknown architecture 'resnet'"):
        build_model({"architecture": "resnet"})


def test_register_a_new_architecture():
    @register_architecture("test_identity_conv")
    def build(config: ModelConfig) -> nn.Module:
        return nn.Conv3d(config.in_channels, config.out_channels, 1)

    try:
        model = build_model({"architecture": "test_identity_conv", "in_channels": 2,
                             "out_channels": 5})
        assert "test_identity_conv" in list_architectures()
        assert model(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 5, 4, 4, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("test_identity_conv")(lambda c: nn.Identity())
    finally:
        registry_module._REGISTRY.pop("test_identity_conv")


def test_config_table_unknown_key_and_wrong_type_are_user_errors():
    with pytest.raises(UserError) as exc:
        build_model({"architecture": "mednext", "mednext_sise": "S"})
    assert "unknown config key 'mednext_sise'" in exc.value.what
    assert "did you mean 'mednext_size'?" in exc.value.fix
    with pytest.raises(UserError, match="mednext_grn"):
        model_config_from_dict({"mednext_grn": "yes"})
    with pytest.raises(UserError, match="out_channels must be >= 1"):
        model_config_from_dict({"out_channels": 0})


def test_config_round_trip_dict_and_object():
    table = {"architecture": "mednext_custom", "mednext_exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2],
             "mednext_block_counts": [1] * 9, "out_channels": 3}
    config = model_config_from_dict(table)
    assert config.mednext_exp_r == [2, 3, 4, 4, 4, 4, 4, 3, 2]
    assert model_config_from_dict(config) is config
    plain = model_config_to_dict(config)
    assert model_config_from_dict({k: v for k, v in plain.items() if v is not None}) == config
    assert count_parameters(table) == count_parameters(config)


# (architecture, extra config, input spatial shape): the smallest legal inputs.
CASES = [
    ("monai_basic_unet3d", {"filters": [8, 8, 16, 32, 64]}, (32, 32, 32)),
    ("monai_unet", {"filters": [8, 16, 32], "num_res_units": 1}, (32, 32, 32)),
    ("monai_unetr", {"input_size": [32, 32, 32], "hidden_size": 96, "mlp_dim": 192,
                     "num_heads": 4, "feature_size": 8}, (32, 32, 32)),
    ("monai_swin_unetr", {"feature_size": 12}, (32, 32, 32)),
    ("monai_segresnet", {"filters": [8], "norm": "group"}, (32, 32, 32)),
    ("mednext", {"mednext_size": "S"}, (32, 32, 32)),
    ("mednext_custom", {"mednext_base_channels": 8, "mednext_block_counts": [1] * 9},
     (32, 32, 32)),
]


@pytest.mark.parametrize(("architecture", "extra", "spatial"), CASES,
                         ids=[c[0] for c in CASES])
def test_every_architecture_builds_and_runs(architecture, extra, spatial):
    torch.manual_seed(0)
    model = build_model({"architecture": architecture, "in_channels": 1, "out_channels": 3,
                         **extra})
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, *spatial))
    assert out.shape == (1, 3, *spatial)
    assert torch.isfinite(out).all()
    assert count_parameters({"architecture": architecture, "out_channels": 3, **extra}) == sum(
        p.numel() for p in model.parameters())


def test_every_builtin_has_a_parameter_count_for_its_default_config():
    counts = {a: count_parameters({"architecture": a}) for a in BUILTIN}
    # MedNeXt-S k3 has 5_550_881 parameters for 1 -> 1 channels; 3 outputs add 2 x (32 + 1)
    assert counts["mednext"] == 5_550_881 + 2 * 33
    assert all(n > 1_000_000 for n in counts.values())


@pytest.mark.parametrize("architecture", [a for a in BUILTIN if a.startswith("monai_")])
def test_monai_nets_refuse_deep_supervision(architecture):
    with pytest.raises(UserError, match="has no deep supervision"):
        build_model({"architecture": architecture, "deep_supervision": True,
                     "input_size": [32, 32, 32]})


def test_monai_net_config_errors():
    with pytest.raises(UserError, match="feature_size divisible by 12"):
        build_model({"architecture": "monai_swin_unetr", "feature_size": 16})
    with pytest.raises(UserError, match="input_size of multiples of 16"):
        build_model({"architecture": "monai_unetr", "input_size": [30, 32, 32]})
    with pytest.raises(UserError, match="5 or 6 filters"):
        build_model({"architecture": "monai_basic_unet3d", "filters": [8, 16]})


def test_import_pytc_core_does_not_import_torch():
    code = "import sys, pytc_core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# (architecture, extra config, a spatial size it cannot take, the nearest valid sizes named)
BAD_SIZES = [
    ("monai_basic_unet3d", {"filters": [8, 8, 16, 32, 64]}, (24, 32, 32), "16x32x32 or 32x32x32"),
    ("monai_unet", {"filters": [8, 16, 32], "num_res_units": 1}, (30, 32, 32),
     "28x32x32 or 32x32x32"),
    ("monai_unetr", {"hidden_size": 96, "mlp_dim": 192, "num_heads": 4, "feature_size": 8},
     (32, 32, 32), "128x128x128"),
    ("monai_swin_unetr", {"feature_size": 12}, (48, 32, 32), "32x32x32 or 64x32x32"),
    ("monai_segresnet", {"filters": [8], "norm": "group"}, (20, 20, 20), "16x16x16 or 24x24x24"),
    ("mednext_custom", {"mednext_base_channels": 8, "mednext_block_counts": [1] * 9},
     (40, 32, 32), "32x32x32 or 48x32x32"),
]


@pytest.mark.parametrize(("architecture", "extra", "spatial", "nearest"), BAD_SIZES,
                         ids=[c[0] for c in BAD_SIZES])
def test_every_architecture_refuses_a_size_it_cannot_take(architecture, extra, spatial, nearest):
    from pytc_core.models import get_architecture, validate_input_size

    table = {"architecture": architecture, "in_channels": 1, "out_channels": 3, **extra}
    with pytest.raises(UserError) as exc:
        validate_input_size(table, spatial)
    assert f"{architecture} cannot take a patch of {'x'.join(map(str, spatial))}" in exc.value.what
    assert exc.value.fix == f"use {nearest}"
    model = build_model(table).eval()
    with torch.no_grad(), pytest.raises(UserError, match="cannot take an? input"):
        model(torch.rand(1, 1, *spatial))
    if architecture == "monai_basic_unet3d":
        return  # BasicUNet pads odd levels itself; the rule keeps its levels aligned (tiling)
    # the check is needed: the bare network fails (or returns the wrong shape) at that size
    bare = get_architecture(architecture).build(model_config_from_dict(table)).eval()
    with torch.no_grad():
        try:
            out = bare(torch.rand(1, 1, *spatial))
        except (RuntimeError, ValueError, AssertionError, UserError):
            pass
        else:
            assert out.shape[2:] != spatial


@pytest.mark.parametrize(("architecture", "extra", "spatial", "nearest"), BAD_SIZES,
                         ids=[c[0] for c in BAD_SIZES])
def test_the_nearest_sizes_named_are_valid(architecture, extra, spatial, nearest):
    from pytc_core.models import validate_input_size

    for option in nearest.split(" or "):
        validate_input_size({"architecture": architecture, **extra},
                            tuple(int(s) for s in option.split("x")))


def test_input_size_rules_and_2d_mednext():
    from pytc_core.models import InputSizeRule, validate_input_size

    rule = InputSizeRule(multiple=16)
    assert rule.nearest((20, 33, 16)) == [(16, 32, 16), (32, 48, 16)]
    assert rule.nearest((8, 8, 8)) == [(16, 16, 16)]
    assert rule.is_valid((16, 32, 48)) and not rule.is_valid((16, 32))
    validate_input_size({"architecture": "mednext", "mednext_dim": "2d"}, (64, 64))
    with pytest.raises(UserError, match="takes 2D inputs, the patch is 3D"):
        validate_input_size({"architecture": "mednext", "mednext_dim": "2d"}, (16, 64, 64))


def test_registry_has_no_import_cycle_and_lookups_do_not_reimport():
    import ast
    from pathlib import Path

    import pytc_core.models as models_pkg

    folder = Path(models_pkg.__file__).parent
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.parse(path.read_text()).body:  # module-level imports only
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                imported.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        if path.name == "registry.py":  # the built-in table names modules, never imports them
            family = {m.split(".")[2] for m in imported if m.startswith("pytc_core.models.")}
            assert family <= {"config", "input_size"}
        elif path.name in ("mednext.py", "monai_nets.py"):  # the families the table names
            assert "pytc_core.models.registry" not in imported, path.name
    from pytc_core.models import get_architecture

    assert get_architecture("mednext") is get_architecture("mednext")


def test_a_registered_architecture_states_its_input_sizes():
    from pytc_core.models import InputSizeRule, validate_input_size

    @register_architecture("test_pool2", input_rule=lambda c: InputSizeRule(multiple=2))
    def build(config: ModelConfig) -> nn.Module:
        return nn.Sequential(nn.MaxPool3d(2), nn.Upsample(scale_factor=2),
                             nn.Conv3d(config.in_channels, config.out_channels, 1))

    try:
        validate_input_size({"architecture": "test_pool2"}, (4, 6, 8))
        with pytest.raises(UserError, match="use 4x6x8 or 6x6x8"):
            validate_input_size({"architecture": "test_pool2"}, (5, 6, 8))
        with pytest.raises(ValueError, match="built in"):
            register_architecture("mednext")
    finally:
        registry_module._REGISTRY.pop("test_pool2")
