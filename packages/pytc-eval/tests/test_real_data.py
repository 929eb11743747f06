"""pytc-eval on the real FlyEM gala volume (shared/data): a known merge of two bodies."""

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest

from pytc_core.cli import run_entry_point
from pytc_eval import edge_lengths, load_skeletons, rand_voi
from pytc_eval.cli import app

NAME = "flyem_gala_train_50x100x200.h5"
CANDIDATES = [os.environ.get("PYTC_SHARED_DATA", ""),
              Path(__file__).resolve().parents[3] / "shared" / "data",
              Path(__file__).resolve().parents[3].parent / "shared" / "data"]
DATA = next((Path(c) / NAME for c in CANDIDATES if c and (Path(c) / NAME).is_file()), None)
pytestmark = pytest.mark.skipif(DATA is None, reason=f"shared/data/{NAME} not found")


def h2(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


@pytest.mark.slow
def test_merge_of_two_real_bodies(tmp_path, capsys):
    import h5py

    for handler in [h for h in logging.getLogger("pytc").handlers if getattr(h, "_pytc", False)]:
        logging.getLogger("pytc").removeHandler(handler)
    with h5py.File(DATA, "r") as f:
        gt = f["labels"][:]
    sizes = np.bincount(gt.ravel())
    sizes[0] = 0
    a, b = (int(i) for i in np.argsort(sizes)[::-1][:2])
    pred = gt.astype(np.uint64)
    pred[gt == b] = a
    n, na, nb = int((gt > 0).sum()), int(sizes[a]), int(sizes[b])

    r = rand_voi(gt, pred)
    assert r["voi_split"] == 0
    assert r["voi_merge"] == pytest.approx((na + nb) / n * h2(na / (na + nb)), rel=1e-12)
    sum_a2 = float((sizes.astype(np.float64) ** 2).sum())
    sum_b2 = sum_a2 - na**2 - nb**2 + (na + nb) ** 2
    assert r["rand_merge"] == pytest.approx(sum_a2 / sum_b2, rel=1e-12)

    np.save(tmp_path / "pred.npy", pred)
    skel_json = tmp_path / "skel.json"
    code = run_entry_point("pytc-eval", app, [
        str(tmp_path / "pred.npy"), "--gt", f"{DATA}:labels", "--skeletons", "kimimaro",
        "--save-skeletons", str(skel_json), "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["voi_merge"] == pytest.approx(r["voi_merge"], rel=1e-12)

    skel = load_skeletons(skel_json)
    vs = report["voxel_size"]
    lengths = edge_lengths(skel, vs)
    sk_of_edge = skel.skeleton_ids[skel.edge_index()[:, 0]]
    per_skel = {int(s): float(lengths[sk_of_edge == s].sum()) for s in np.unique(sk_of_edge)}
    total = sum(per_skel.values())
    # every skeleton lies in its own body; the bodies a and b merge, so all their edges are
    # merged and the others are whole: ERL = Σ_{s ≠ a, b} L_s² / L
    assert report["merge_stats"] == {str(a): [a, b]}
    expected = sum(v * v for s, v in per_skel.items() if s not in (a, b)) / total
    assert report["erl"] == pytest.approx(expected, rel=1e-9)
    assert report["gt_erl"] == pytest.approx(sum(v * v for v in per_skel.values()) / total)
    assert report["n_edges_split"] == 0 and report["n_edges_omitted"] == 0
