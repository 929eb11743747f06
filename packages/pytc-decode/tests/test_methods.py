"""The decode method interface: a fourth method is one class plus one line, every method's
options live in its own table, the resume key holds only the method in use's options, the
deprecated spellings still work (with a warning), and what blockwise decoding keeps of the
whole-volume result, per method."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from pytc_core.bbox import BBox
from pytc_core.cli import run_entry_point
from pytc_core.config import resolve_config
from pytc_core.output_run import run_key
from pytc_core.synthetic import defective_affinities, synthetic_labels
from pytc_core.targets import affinities_from_labels
from pytc_core.volume import create_volume, open_volume
from pytc_decode import affinity_cc, run_decode
from pytc_decode.blockwise import BlockTables
from pytc_decode.cli import app
from pytc_decode.config import DecodeConfig, result_options
from pytc_decode.methods import DecodeMethod, method_table, methods_of
from pytc_decode.methods.cc import CC

DATA = Path(__file__).resolve().parents[3] / "examples" / "data" / "flyem_medulla_250.h5"


# --- a fourth method: one class and one line -----------------------------------------------

@dataclass(frozen=True)
class MeanCcOptions:
    threshold: float = 0.5


class MeanAffinityCC(DecodeMethod):
    """Connected components of the voxels whose mean nearest-neighbour affinity is above
    ``threshold``: every edge of a voxel gets that mean, then CC's own blockwise steps."""

    name = "mean_cc"
    options_type = MeanCcOptions
    blockwise = True

    @staticmethod
    def _cfg(cfg):  # CC with this method's threshold
        return replace(cfg, method="cc", cc=replace(cfg.cc, threshold=cfg.mean_cc.threshold))

    @staticmethod
    def _mean(aff: np.ndarray) -> np.ndarray:
        return np.repeat(aff[:3].mean(axis=0, dtype=np.float32)[None], 3, axis=0)

    def segment(self, affinities, mask, cfg, voxel_size: Sequence[float]):
        return CC.segment(self._mean(affinities), mask, self._cfg(cfg), voxel_size)

    def label_block(self, affinities, mask, block: BBox, context: BBox, volume_box: BBox, cfg,
                    voxel_size: Sequence[float]):
        return CC.label_block(self._mean(affinities), mask, block, context, volume_box,
                              self._cfg(cfg), voxel_size)

    def reduce(self, summaries, volume_box: BBox, cfg, dtype) -> BlockTables:
        return CC.reduce(summaries, volume_box, self._cfg(cfg), dtype)


@dataclass(frozen=True)
class ConfigWithMeanCC(DecodeConfig):
    mean_cc: MeanCcOptions = method_table(MeanAffinityCC())  # the one line


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    labels = synthetic_labels((24, 32, 32), seed=9)
    aff = affinities_from_labels(labels)[0]
    noise = np.random.default_rng(1).uniform(-0.4, 0.4, aff.shape)
    return np.clip(aff + noise, 0, 1).astype(np.float32)


def test_a_fourth_method_runs_whole_and_blockwise_through_the_stage(tmp_path, noisy):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, noisy.shape, np.float32, chunk_size=(8, 16, 16)).write(noisy)
    toml = tmp_path / "decode.toml"
    toml.write_text('[decode]\nmethod = "mean_cc"\nmin_size = 3\n[decode.mean_cc]\n'
                    'threshold = 0.6\n')
    cfg = resolve_config(ConfigWithMeanCC, toml, section="decode")
    assert list(methods_of(cfg)) == ["cc", "ws", "mws", "mean_cc"]
    mean = np.repeat(noisy.mean(axis=0, dtype=np.float32)[None], 3, axis=0)
    expected = affinity_cc(mean, 0.6, 3)
    assert expected.max() > 5  # a real segmentation, not an empty one
    whole = run_decode(aff_uri, cfg, output=str(tmp_path / "whole"), show_progress=False)
    np.testing.assert_array_equal(open_volume(whole.output).read(), expected)
    blocks = run_decode(aff_uri, replace(cfg, block_size=(8, 16, 16)),
                        output=str(tmp_path / "blocks"), show_progress=False)
    assert blocks.blocks["label"].planned == 12
    np.testing.assert_array_equal(open_volume(blocks.output).read(), expected)
    # its options are in the resume key; another method's are not
    key = result_options(cfg)
    assert key["mean_cc"] == {"threshold": 0.6} and "cc" not in key and "ws" not in key


# --- the resume key: only the options of the method in use ----------------------------------

def test_a_ws_run_resumed_with_another_cc_threshold_is_the_same_run(tmp_path, noisy, capsys):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, noisy.shape, np.float32, chunk_size=(8, 16, 16)).write(noisy)
    common = [aff_uri, "--method", "ws", "--block-size", "8,16,16", "-q",
              "--set", "ws.fragment_block=[8, 16, 16]"]
    assert run_entry_point("pytc-decode", app, [*common, "-o", str(tmp_path / "all")]) == 0
    seg = str(tmp_path / "seg")
    assert run_entry_point("pytc-decode", app, [*common, "-o", seg, "--step", "label",
                                                "--threshold", "0.2"]) == 0
    for step in ("reduce", "relabel"):  # a different --threshold: still the same run
        assert run_entry_point("pytc-decode", app, [*common, "-o", seg, "--step", step,
                                                    "--threshold", "0.9"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(open_volume(seg).read(), open_volume(str(tmp_path / "all"))
                                  .read())
    # whole volume: the same key with any cc threshold, another key with another ws option
    ws = DecodeConfig(method="ws")
    key = run_key("decode", [aff_uri], result_options(ws))
    assert run_key("decode", [aff_uri], result_options(replace(ws, threshold=0.9))) == key
    assert run_key("decode", [aff_uri], result_options(replace(ws, seed_radius=3))) != key
    # and for cc the threshold is part of it
    cc = DecodeConfig()
    assert (run_key("decode", [aff_uri], result_options(replace(cc, threshold=0.9)))
            != run_key("decode", [aff_uri], result_options(cc)))


def test_a_cc_run_resumed_with_another_threshold_is_refused(tmp_path, noisy, capsys):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, noisy.shape, np.float32, chunk_size=(8, 16, 16)).write(noisy)
    common = [aff_uri, "-o", str(tmp_path / "seg"), "--block-size", "8,16,16", "-q"]
    assert run_entry_point("pytc-decode", app, [*common, "--step", "label"]) == 0
    capsys.readouterr()
    code = run_entry_point("pytc-decode", app, [*common, "--step", "reduce", "--threshold",
                                                "0.7"])
    assert code == 2 and "cc.threshold" in capsys.readouterr().err


# --- flat keys and deprecated spellings -----------------------------------------------------

def test_flat_keys_set_the_method_tables():
    cfg = DecodeConfig(threshold=0.3, seed_radius=4, ws_halo=2, agglomeration_threshold=0.2,
                       long_range_offsets=((-2, 0, 0),))
    assert cfg.cc.threshold == 0.3 and cfg.mws.threshold == 0.3
    assert cfg.ws.seed_radius == 4 and cfg.ws.halo == 2 and cfg.ws.thresholds == (0.2,)
    assert cfg.mws.long_range_offsets == ((-2, 0, 0),)
    assert cfg.threshold is None  # folded in: the resolved config has the tables only


@pytest.mark.parametrize(("toml", "old", "check"), [
    ('[decode]\nmethod = "ws"\nmerge_threshold = [0.3, 0.4]\n', "'merge_threshold'",
     lambda c: c.ws.thresholds == (0.3, 0.4)),
    ('[decode]\nmethod = "mws"\noffsets = [[-2, 0, 0]]\n', "'offsets'",
     lambda c: c.mws.long_range_offsets == ((-2, 0, 0),)),
])
def test_deprecated_keys_still_work_with_a_one_line_warning(tmp_path, caplog, toml, old, check):
    path = tmp_path / "decode.toml"
    path.write_text(toml)
    with caplog.at_level(logging.WARNING, logger="pytc.decode"):
        cfg = resolve_config(DecodeConfig, path, section="decode")
    assert check(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and old in warnings[0] and "deprecated" in warnings[0]
    assert "\n" not in warnings[0]


def test_the_deprecated_merge_threshold_flag_still_works_with_a_warning(tmp_path, noisy,
                                                                        capsys, caplog):
    aff_uri = str(tmp_path / "aff.npy")
    np.save(aff_uri, noisy)
    with caplog.at_level(logging.WARNING, logger="pytc.decode"):
        assert run_entry_point("pytc-decode", app, [aff_uri, "-o", str(tmp_path / "old.npy"),
                                                    "--method", "ws", "--merge-threshold",
                                                    "0.3"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--merge-threshold" in warnings[0]
    assert "--agglomeration-threshold" in warnings[0]
    assert run_entry_point("pytc-decode", app, [aff_uri, "-o", str(tmp_path / "new.npy"),
                                                "--method", "ws", "--agglomeration-threshold",
                                                "0.3"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.load(tmp_path / "new.npy"))


# --- what blockwise keeps, per method ------------------------------------------------------

@pytest.mark.parametrize("block_size", [(8, 16, 16), (5, 7, 9), (24, 32, 16)])
def test_blockwise_cc_through_the_stage_is_identical_to_the_whole_volume(tmp_path, noisy,
                                                                          block_size):
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, noisy.shape, np.float32, chunk_size=(8, 16, 16)).write(noisy)
    cfg = DecodeConfig(threshold=0.5, min_size=3)
    whole = run_decode(aff_uri, cfg, output=str(tmp_path / "whole"), show_progress=False)
    blocks = run_decode(aff_uri, replace(cfg, block_size=block_size),
                        output=str(tmp_path / "blocks"), show_progress=False)
    np.testing.assert_array_equal(open_volume(blocks.output).read(),
                                  open_volume(whole.output).read())


@pytest.mark.slow
def test_blockwise_ws_at_its_defaults_is_the_whole_volume_result(tmp_path):
    """FlyEM medulla z 175..239, y/x 0..256 (64 x 256 x 256), affinities of the labels with
    defects, ws at its defaults (fragment grid 128, halo 16) through the stage: blocks of
    64 x 128 x 128 (4 blocks; 64 covers the volume in z) give the whole-volume ids exactly,
    for two thresholds from one pass. Without the grid (``ws.fragment_block = 0``) the same
    blocks are cells and differ from the unbounded whole volume (VOI 0.23 with 16 x 32 x 32
    blocks before the grid existed)."""
    h5py = pytest.importorskip("h5py")

    with h5py.File(DATA) as f:
        labels = f["labels"][175:239, :256, :256].astype(np.uint32)
    aff = defective_affinities(affinities_from_labels(labels)[0], seed=1, missing=(20,))
    aff_uri = str(tmp_path / "aff")
    create_volume(aff_uri, aff.shape, np.float32, chunk_size=(64, 64, 64)).write(aff)
    cfg = DecodeConfig(method="ws", agglomeration_threshold=(0.3, 0.5), min_size=20)
    whole = run_decode(aff_uri, cfg, output=str(tmp_path / "whole"), show_progress=False)
    blocks = run_decode(aff_uri, replace(cfg, block_size=(64, 128, 128)),
                        output=str(tmp_path / "blocks"), show_progress=False)
    assert blocks.blocks["label"].planned == 4
    for w_uri, b_uri in zip(whole.outputs, blocks.outputs, strict=True):
        w, b = open_volume(w_uri).read(), open_volume(b_uri).read()
        assert w.max() > 20
        np.testing.assert_array_equal(b, w)


def test_affinity_watershed_merge_threshold_keyword_still_works_with_a_warning(noisy, caplog):
    from pytc_decode import affinity_watershed

    with caplog.at_level(logging.WARNING, logger="pytc.decode"):
        old = affinity_watershed(noisy, merge_threshold=0.3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "merge_threshold" in warnings[0]
    np.testing.assert_array_equal(old, affinity_watershed(noisy, agglomeration_threshold=0.3))


def test_mutex_watershed_offsets_keyword_still_works_with_a_warning(caplog):
    pytest.importorskip("mwatershed")
    from pytc_core.targets import long_range_offsets
    from pytc_decode import mutex_watershed

    labels = np.zeros((6, 8, 8), np.uint32)
    labels[:, :4] = 1
    labels[:, 4:] = 2
    offsets = long_range_offsets((2,))
    aff = affinities_from_labels(labels, offsets)[0]
    with caplog.at_level(logging.WARNING, logger="pytc.decode"):
        old = mutex_watershed(aff, offsets=offsets[3:])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "offsets" in warnings[0]
    new = mutex_watershed(aff, long_range_offsets=offsets[3:])
    np.testing.assert_array_equal(old, new)
    assert new.max() == 2
