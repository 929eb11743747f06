"""The benchmark table: BENCH result lines in, the marked section of bench/README.md out.

Every benchmark in bench/ ends by printing one line per table row on stdout::

    BENCH|<stage>|<what is compared>|<ratio, with its meaning>|<peer>

e.g. ``BENCH|decode|affinity_cc vs cc3d graph path, 256³|2.68× (> 1: pytc faster)|cc3d 3.24``.
Fields never contain ``|`` or a newline (``emit`` replaces them). ``bench/run_all.sh`` keeps
each benchmark's output in ``bench/results/<date>/<name>.log`` with ``<name>.meta`` beside it
(``command=``, ``rc=``, ``seconds=``, ``date=``, ``machine=`` lines) and then calls::

    python bench/table.py bench/results/<date> bench/README.md

which rewrites the part of README.md between ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->``: one row per BENCH line, or one ``failed: see log`` row for a
benchmark that exited non-zero or printed no BENCH line. Pure text processing (tested in
tests/test_bench_table.py on fake logs); it runs no benchmark.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"
PREFIX = "BENCH|"
HEADER = ("| stage | what is compared | ratio | command that reproduces the row | date | machine |\n"
          "|---|---|---|---|---|---|")


def _clean(field: object) -> str:
    return " ".join(str(field).replace("|", "/").split())


def bench_line(stage: str, what: str, ratio: str, peer: str) -> str:
    """The machine-readable result line of one table row (no trailing newline)."""
    return PREFIX + "|".join(_clean(f) for f in (stage, what, ratio, peer))


def emit(stage: str, what: str, ratio: str, peer: str) -> None:
    """Print one BENCH line on stdout (flushed). ``ratio`` states its meaning, e.g.
    ``"2.68× (> 1: pytc faster)"``."""
    print(bench_line(stage, what, ratio, peer), flush=True)


def peer(dist: str, label: str | None = None) -> str:
    """``"<label> <installed version of dist>"`` (the peer column)."""
    try:
        return f"{label or dist} {version(dist)}"
    except PackageNotFoundError:
        return label or dist


def ratio_x(x: float, meaning: str) -> str:
    """Ratio text ``"2.68× (<meaning>)"``."""
    return f"{x:.2f}× ({meaning})"


@dataclass(frozen=True)
class Row:
    stage: str
    what: str
    ratio: str
    peer: str


def parse_rows(text: str) -> list[Row]:
    """The BENCH lines of one log (other lines ignored; a malformed BENCH line raises)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        fields = line[len(PREFIX):].split("|")
        if len(fields) != 4:
            raise ValueError(f"malformed BENCH line (want 4 fields after BENCH|): {line!r}")
        rows.append(Row(*(f.strip() for f in fields)))
    return rows


def parse_meta(text: str) -> dict[str, str]:
    """``key=value`` lines of a ``<name>.meta`` file."""
    meta = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            meta[key.strip()] = value.strip()
    return meta


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def render(results: Path, names: list[str] | None = None) -> str:
    """The table (header + rows) for the ``<name>.meta`` files in ``results`` (those in
    ``names`` first, in that order; the rest sorted by name)."""
    metas = sorted(results.glob("*.meta"))
    if names is not None:
        order = {n: i for i, n in enumerate(names)}
        metas = sorted(metas, key=lambda m: (order.get(m.stem, len(order)), m.stem))
    lines = [HEADER]
    for meta_path in metas:
        name = meta_path.stem
        meta = parse_meta(meta_path.read_text())
        command = f"`{meta.get('command', '?')}`"
        date, machine = meta.get("date", "?"), meta.get("machine", "?")
        log = meta_path.with_suffix(".log")
        try:
            rows = parse_rows(log.read_text(errors="replace")) if log.exists() else []
        except ValueError:
            rows = []
        if meta.get("rc", "1") != "0" or not rows:
            rows = [Row(name, f"bench_{name}.py", f"failed: see log ({log})", "")]
        for r in rows:
            what = r.what + (f" (peer: {r.peer})" if r.peer else "")
            lines.append("| " + " | ".join(_cell(c) for c in
                                            (r.stage, what, r.ratio, command, date, machine))
                         + " |")
    return "\n".join(lines)


def replace_section(readme: str, table: str) -> str:
    """``readme`` with everything between the START and END markers replaced by ``table``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} section")
    return readme[:start + len(START)] + "\n" + table + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="bench/results/<date> (logs and .meta files)")
    parser.add_argument("readme", type=Path, help="the README.md whose marked section to rewrite")
    parser.add_argument("--names", nargs="*", help="row order (default: sorted)")
    args = parser.parse_args(argv)
    table = render(args.results, args.names)
    args.readme.write_text(replace_section(args.readme.read_text(), table))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
