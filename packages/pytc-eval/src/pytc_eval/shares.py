"""Samples of block shares in a scratch folder (``pytc-eval --step sample|reduce``).

Share ``i`` of ``n`` samples its blocks (round robin, :func:`pytc_core.blocks.select_share`)
and writes them to ``<scratch>/<key>/share-<i>-of-<n>.npz`` (compressed, atomic; an existing
file means the share is done, so a rerun resumes); the reduce reads every share of one
``n`` and merges them. ``key`` names the pass (segmentation, ground truth, box, block size,
skeletons, and for a sweep the threshold its table counts), so shares of another pass are
never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from pytc_core.bbox import BBox
from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_eval.sample import Samples

__all__ = ["pass_key", "read_shares", "share_path", "write_share"]

_NAME = re.compile(r"^share-(\d+)-of-(\d+)\.npz$")


def pass_key(seg_uri: str, gt_uri: str, box: BBox, block_size: Sequence[int] | int,
             skeletons: str | None, num_nodes: int, level: float | None = None) -> str:
    """A short hash naming one pass (its scratch subfolder); ``level``: the threshold whose
    segments a sweep's table counts (None: the labels as they are)."""
    parts: list = [seg_uri, gt_uri, list(box.start), list(box.stop),
                   list(block_size) if not isinstance(block_size, int) else block_size,
                   skeletons, num_nodes]
    if level is not None:  # keys of passes without a level are those of earlier versions
        parts.append(float(level))
    text = json.dumps(parts)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def share_path(scratch: str, key: str, share: tuple[int, int]) -> Path:
    return Path(scratch) / key / f"share-{share[0]}-of-{share[1]}.npz"


def write_share(scratch: str, key: str, share: tuple[int, int], samples: Samples) -> Path:
    """Store one share's samples atomically; returns the file."""
    path = share_path(scratch, key, share)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, samples.to_bytes())
    return path


def read_shares(scratch: str, key: str, what: str) -> Samples:
    """Every share of the pass ``key`` merged; UserError naming the missing ones."""
    folder = Path(scratch) / key
    found: dict[int, set[int]] = {}
    for p in folder.glob("share-*-of-*.npz") if folder.is_dir() else []:
        m = _NAME.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not found:
        raise UserError(f"no samples of {what} in {folder}",
                        "run pytc-eval --step sample --blocks i/n (every i) with the same "
                        "arguments and --scratch first")
    if len(found) > 1:
        raise UserError(f"{folder} holds shares of different splits ({sorted(found)} tasks)",
                        "remove the folder and sample again with one --blocks i/n")
    n, have = next(iter(found.items()))
    missing = sorted(set(range(n)) - have)
    if missing:
        raise UserError(f"shares {', '.join(map(str, missing))} of {n} of {what} are missing "
                        f"in {folder}", f"run pytc-eval --step sample --blocks {missing[0]}/{n} "
                        "(each missing one) first")
    samples = None
    for i in range(n):
        part = Samples.from_bytes(share_path(scratch, key, (i, n)).read_bytes())
        samples = part if samples is None else samples.merge(part)
    assert samples is not None
    return samples
