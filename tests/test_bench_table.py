"""bench/table.py: BENCH lines of fixed fake logs -> the marked table section of a README.

Pure text processing; no benchmark runs here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TABLE_PY = Path(__file__).resolve().parents[1] / "bench" / "table.py"
_spec = importlib.util.spec_from_file_location("bench_table", TABLE_PY)
assert _spec is not None and _spec.loader is not None
table = importlib.util.module_from_spec(_spec)
sys.modules["bench_table"] = table  # dataclasses look the module up by name
_spec.loader.exec_module(table)

README = """# Benchmarks

Intro text that must survive.

<!-- bench-table:start -->
| old | table |
|---|---|
| hand | copied |
<!-- bench-table:end -->

Text after the table.
"""

DECODE_LOG = """numba threads: 2, cores: 2
  targets: >= 2x cc3d graph: 2.15x
BENCH|decode|affinity_cc vs cc3d graph path, 256³|2.15× (> 1: pytc faster)|cc3d 4.1.1
some other line with BENCH| not at the start
BENCH|decode|blockwise vs whole|0.84 (blockwise time / whole time; ≤ 1.5 wanted)|pytc-decode whole
"""


def meta(command: str, rc: int, load: str) -> str:
    return (f"command={command}\nrc={rc}\nseconds=12\ndate=2026-11-23\n"
            f"machine=2 CPUs, load {load} at start\n")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    (d / "decode.log").write_text(DECODE_LOG)
    (d / "decode.meta").write_text(meta("uv run python bench/bench_decode.py --sizes 256", 0, "0.5"))
    # exit 0 but no BENCH line (e.g. a bench that lost its report): failed row
    (d / "ws.log").write_text("speed: 0.22x\n")
    (d / "ws.meta").write_text(meta("uv run --with waterz==0.10.1 python bench/bench_ws.py", 0,
                                    "0.7"))
    # a crash after printing a BENCH line: still a failed row, the partial line is not trusted
    (d / "eval.log").write_text("BENCH|eval|x|1.00× (> 1: pytc faster)|y\nTraceback ...\n")
    (d / "eval.meta").write_text(meta("uv run python bench/bench_eval.py --quick", 1, "1.2"))
    return d


def test_bench_line_round_trip() -> None:
    line = table.bench_line("infer", "a | b\nc", table.ratio_x(1.234, "> 1: pytc faster"),
                            "monai 1.5")
    assert line == "BENCH|infer|a / b c|1.23× (> 1: pytc faster)|monai 1.5"
    assert table.parse_rows(line) == [table.Row("infer", "a / b c", "1.23× (> 1: pytc faster)",
                                                "monai 1.5")]


def test_parse_rows_ignores_other_lines_and_rejects_malformed() -> None:
    rows = table.parse_rows(DECODE_LOG)
    assert [r.ratio for r in rows] == ["2.15× (> 1: pytc faster)",
                                       "0.84 (blockwise time / whole time; ≤ 1.5 wanted)"]
    assert rows[1].peer == "pytc-decode whole"
    with pytest.raises(ValueError, match="malformed"):
        table.parse_rows("BENCH|decode|only three|fields")


def test_render_rows_failures_and_order(results: Path) -> None:
    out = table.render(results, ["decode", "ws", "eval"]).splitlines()
    assert out[0] == ("| stage | what is compared | ratio | command that reproduces the row | "
                      "date | machine |")
    assert out[2] == ("| decode | affinity_cc vs cc3d graph path, 256³ (peer: cc3d 4.1.1) | "
                      "2.15× (> 1: pytc faster) | "
                      "`uv run python bench/bench_decode.py --sizes 256` | 2026-11-23 | "
                      "2 CPUs, load 0.5 at start |")
    assert out[3].startswith("| decode | blockwise vs whole (peer: pytc-decode whole) | 0.84 ")
    assert out[4] == (f"| ws | bench_ws.py | failed: see log ({results / 'ws.log'}) | "
                      "`uv run --with waterz==0.10.1 python bench/bench_ws.py` | 2026-11-23 | "
                      "2 CPUs, load 0.7 at start |")
    assert out[5].startswith("| eval | bench_eval.py | failed: see log (")
    assert len(out) == 6
    # default order: by name
    assert [line.split(" | ")[0] for line in table.render(results).splitlines()[2:]] == \
        ["| decode", "| decode", "| eval", "| ws"]


def test_replace_section_keeps_the_rest(results: Path) -> None:
    new = table.replace_section(README, "| a |\n|---|")
    assert new == README.replace("| old | table |\n|---|---|\n| hand | copied |", "| a |\n|---|")
    with pytest.raises(ValueError, match="bench-table"):
        table.replace_section("# no markers\n", "| a |")


def test_cli_rewrites_the_readme(results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    subprocess.run([sys.executable, str(TABLE_PY), str(results), str(readme), "--names",
                    "decode", "ws", "eval"], check=True, capture_output=True)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nIntro text that must survive.\n\n"
                           "<!-- bench-table:start -->\n| stage |")
    assert text.endswith("|\n<!-- bench-table:end -->\n\nText after the table.\n")
    assert "hand | copied" not in text
    assert text.count("\n|") == 6  # header, separator, 4 rows
    assert text == table.replace_section(README, table.render(results, ["decode", "ws", "eval"]))
