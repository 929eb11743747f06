"""A fragments volume's merge history: every threshold's segmentation without writing it.

``pytc-decode --method ws`` agglomerates watershed fragments once; its output can be the
fragments volume (ids 1..``num_fragments``, 0 = background) plus the history of that
agglomeration, stored beside the volume as ``pytc_merges.npz`` (inside a precomputed layer or
zarr array, ``<file>[.<dataset>].pytc_merges.npz`` beside a file; on gs:// / s3:// in the
layer). Each merge ``i`` joins region ``absorbed[i]`` into region ``into[i]`` (both the ids of
fragments that were still region representatives at that moment) at ``score[i]``; scores never
decrease. The segmentation at threshold ``t`` keeps the merges scored **below** ``t``
(waterz's convention: score = 1 - mean boundary affinity, a higher threshold merges more):
:meth:`MergeHistory.segment_table` gives the fragment → segment table, the segment id being the
surviving representative fragment's id (not renumbered).

``fragments_key`` is the run key of the command that wrote the fragments (their run record,
``pytc_run.json``): :func:`read_merge_history` refuses a table that belongs to another run.

npz layout (all arrays, compressed): ``absorbed`` uint64 (M,), ``into`` uint64 (M,), ``score``
float64 (M,), ``meta`` a 0-d unicode array holding JSON (``format``, ``num_fragments``,
``thresholds``, ``fragments_key``, ``score``, ``config``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytc_core.errors import UserError
from pytc_core.files import write_atomic
from pytc_core.output_run import read_run_record
from pytc_core.volume import parse_uri, sidecar_path
from pytc_core.volume.precomputed import to_cloudpath

__all__ = ["MERGES_NAME", "MergeHistory", "read_merge_history", "write_merge_history",
           "merges_location"]

#: the file name of a merge history inside (or the suffix beside) its fragments volume
MERGES_NAME = "pytc_merges.npz"
FORMAT = "pytc-merges/1"
SCORE = "1 - mean affinity; a threshold t keeps the merges scored below t"


@dataclass(frozen=True)
class MergeHistory:
    """Merges of fragments in order: ``absorbed[i]`` joins ``into[i]`` at ``score[i]``."""

    absorbed: np.ndarray
    into: np.ndarray
    score: np.ndarray
    #: the largest fragment id (ids 1..num_fragments; 0 is background)
    num_fragments: int
    #: the thresholds the decode was asked for (the default sweep of an evaluation)
    thresholds: tuple[float, ...] = ()
    #: run key of the fragments' run record (None: fragments not written by a pytc run)
    fragments_key: str | None = None
    #: the decode's method settings, for the report
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: np.ndarray, num_fragments: int, **kwargs: Any) -> MergeHistory:
        """From ``(M, 3)`` rows ``(absorbed, into, score)`` (pytc_decode's agglomeration)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        return cls(rows[:, 0].astype(np.uint64), rows[:, 1].astype(np.uint64),
                   rows[:, 2].copy(), int(num_fragments), **kwargs)

    def rows(self) -> np.ndarray:
        """``(M, 3)`` float64 rows ``(absorbed, into, score)``: the inverse of
        :meth:`from_rows`."""
        return np.stack([self.absorbed.astype(np.float64), self.into.astype(np.float64),
                         self.score.astype(np.float64)], axis=1).reshape(-1, 3)

    def __len__(self) -> int:
        return int(self.score.size)

    def check(self, where: str = "the merge history") -> None:
        """UserError unless this is a valid history of fragments 1..num_fragments."""
        m = self.score.size
        fix = "decode the fragments again (pytc-decode --method ws --overwrite)"
        if self.absorbed.shape != (m,) or self.into.shape != (m,):
            raise UserError(f"{where} has columns of different lengths", fix)
        if m == 0:
            return
        if not np.all(np.isfinite(self.score)) or np.any(np.diff(self.score) < 0):
            raise UserError(f"{where} has scores that are not finite and non-decreasing", fix)
        n = self.num_fragments
        ids = np.concatenate([self.absorbed, self.into])
        if ids.min() < 1 or ids.max() > n:
            raise UserError(f"{where} names fragment ids outside 1..{n}", fix)
        if np.any(self.absorbed == self.into):
            raise UserError(f"{where} merges a fragment into itself", fix)
        absorbed_at = np.full(n + 1, m, dtype=np.int64)
        absorbed_at[self.absorbed] = np.arange(m)
        if np.unique(self.absorbed).size != m:
            raise UserError(f"{where} absorbs a region twice", fix)
        if np.any(absorbed_at[self.into] <= np.arange(m)):
            raise UserError(f"{where} merges into a region that was already absorbed", fix)

    def merges_below(self, threshold: float) -> int:
        """How many merges a segmentation at ``threshold`` keeps (those scored below it)."""
        return int(np.searchsorted(self.score, threshold, side="left"))

    def segment_table(self, threshold: float) -> np.ndarray:
        """uint64 table (num_fragments + 1,): fragment id → segment id at ``threshold``
        (the id of the fragment that represents its region); 0 → 0."""
        k = self.merges_below(threshold)
        return _resolve(self.absorbed[:k], self.into[:k], self.num_fragments)

    def segment_tables(self, thresholds: Sequence[float]) -> list[np.ndarray]:
        """:meth:`segment_table` for each threshold, in the order given (every table held
        at once: :meth:`iter_segment_tables` holds one)."""
        out: list[np.ndarray | None] = [None] * len(thresholds)
        for i, table in self.iter_segment_tables(thresholds):
            out[i] = table
        return [t for t in out if t is not None]

    def iter_segment_tables(self, thresholds: Sequence[float]
                            ) -> Iterator[tuple[int, np.ndarray]]:
        """``(i, segment_table(thresholds[i]))`` in increasing threshold order (ties in the
        order given), each a new array built from the one before and only the merges
        between them: O(num_fragments) per table plus O(merges · log) in all."""
        table = np.arange(self.num_fragments + 1, dtype=np.uint64)
        done = 0
        for i in sorted(range(len(thresholds)), key=lambda i: float(thresholds[i])):
            k = self.merges_below(float(thresholds[i]))
            if k > done:  # the new merges, between the regions the table names so far
                table = _resolve(table[self.absorbed[done:k]], table[self.into[done:k]],
                                 self.num_fragments)[table]
                done = k
            yield i, table.copy()

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "num_fragments": self.num_fragments,
                "thresholds": list(self.thresholds), "fragments_key": self.fragments_key,
                "score": SCORE, "config": self.config}
        buf = io.BytesIO()
        np.savez_compressed(buf, absorbed=self.absorbed.astype(np.uint64),
                            into=self.into.astype(np.uint64),
                            score=self.score.astype(np.float64),
                            meta=np.array(json.dumps(meta, default=str)))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "the merge history") -> MergeHistory:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
                history = cls(z["absorbed"].astype(np.uint64), z["into"].astype(np.uint64),
                              z["score"].astype(np.float64), int(meta["num_fragments"]),
                              tuple(float(t) for t in meta.get("thresholds", ())),
                              meta.get("fragments_key"), dict(meta.get("config") or {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{where} is unreadable ({exc})",
                            "decode the fragments again (pytc-decode --method ws "
                            "--overwrite)") from None
        history.check(where)
        return history


def merges_location(fragments_uri: str) -> str:
    """Where the merge history of the fragments at ``fragments_uri`` lives (for messages)."""
    path = sidecar_path(fragments_uri, MERGES_NAME)
    return str(path) if path is not None else fragments_uri.rstrip("/") + "/" + MERGES_NAME


def write_merge_history(fragments_uri: str, history: MergeHistory) -> None:
    """Store ``history`` beside (or inside) the fragments volume, atomically."""
    history.check()
    data = history.to_bytes()
    path = sidecar_path(fragments_uri, MERGES_NAME)
    if path is None:
        _remote(fragments_uri).put(MERGES_NAME, data, content_type="application/octet-stream")
    else:
        write_atomic(path, data)


def read_merge_history(fragments_uri: str) -> MergeHistory | None:
    """The merge history stored with the fragments at ``fragments_uri``, or None if there is
    none (the volume is not a fragments output). UserError if it is unreadable, inconsistent,
    or belongs to another run than the fragments' run record."""
    where = merges_location(fragments_uri)
    path = sidecar_path(fragments_uri, MERGES_NAME)
    if path is None:
        if parse_uri(fragments_uri).format != "precomputed":
            return None
        data = _remote(fragments_uri).get(MERGES_NAME)
        if data is None:
            return None
    else:
        if not path.is_file():
            return None
        data = path.read_bytes()
    history = MergeHistory.from_bytes(data, where)
    record = read_run_record(fragments_uri)
    if (history.fragments_key is not None and record is not None
            and record.key != history.fragments_key):
        raise UserError(f"the merge history {where} belongs to another run than the fragments "
                        f"{fragments_uri} (run {history.fragments_key}, fragments written by "
                        f"run {record.key})", "decode the fragments again with --overwrite")
    return history


def _remote(uri: str) -> Any:
    """CloudFiles of a remote layer."""
    from cloudfiles import CloudFiles  # heavy: only for remote layers

    return CloudFiles(to_cloudpath(uri))


def _resolve(absorbed: np.ndarray, into: np.ndarray, num_fragments: int) -> np.ndarray:
    """Where each region id ends up after the merges ``absorbed[i] → into[i]`` (in order,
    each region absorbed once): a uint64 table over ids 0..num_fragments. Chains are
    followed to their end by pointer jumping on the absorbed ids only (every id on a chain
    but its end was absorbed): O(merges) per pass, log(chain length) passes."""
    step = np.arange(num_fragments + 1, dtype=np.uint64)
    step[absorbed] = into
    while True:
        up = step[absorbed]
        upper = step[up]
        if np.array_equal(up, upper):
            return step
        step[absorbed] = upper
