"""The error/stdout conventions every command shares, on a small real cyclopts app."""

from __future__ import annotations

import io

import cyclopts
import numpy as np
import pytest

from pytc_core import UserError, create_volume, open_volume, require_finite
from pytc_core import cli as core_cli
from pytc_core.cli import (
    CommonFlags,
    emit,
    parse_block_size,
    read_uri_from_stdin,
    read_uris_from_stdin,
    run_entry_point,
)


def make_app(tmp_path):
    app = cyclopts.App(name="pytc-demo")

    @app.default
    def copy(src: str, dst: str, *, overwrite: bool = False):
        """Copy a volume."""
        vol = open_volume(src)
        data = vol.read()
        require_finite(data, src)
        out = create_volume(dst, vol.shape, vol.dtype, overwrite=overwrite)
        out.write(data)
        emit(dst)

    return app


def run(app, argv, capsys):
    code = run_entry_point("pytc-demo", app, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_success_prints_only_the_uri(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones((2, 2, 2), np.float32))
    code, out, err = run(make_app(tmp_path), [str(tmp_path / "a.npy"), str(tmp_path / "b_layer")], capsys)
    assert code == 0 and out == f"{tmp_path / 'b_layer'}\n"
    assert open_volume(str(tmp_path / "b_layer")).read().sum() == 8


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, bad):
    data = np.ones((2, 2, 2), np.float32)
    data[1, 1, 1] = float(bad)
    np.save(tmp_path / "a.npy", data)
    code, out, err = run(make_app(tmp_path), [str(tmp_path / "a.npy"), str(tmp_path / "out.npy")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pytc-demo: error: ") and "NaN/inf" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.npy").exists()


def test_existing_output_without_overwrite(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones((2, 2, 2), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((2, 2, 2), np.uint8))
    code, _, err = run(make_app(tmp_path), [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")], capsys)
    assert code == 2 and "already exists (pass --overwrite" in err
    assert np.load(tmp_path / "b.npy").sum() == 0
    code, _, _ = run(make_app(tmp_path), [str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--overwrite"], capsys)
    assert code == 0 and np.load(tmp_path / "b.npy").sum() == 8


def test_unknown_flag_is_a_one_line_usage_error(tmp_path, capsys):
    code, out, err = run(make_app(tmp_path), ["a", "b", "--frobnicate"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "--frobnicate" in err


def test_missing_input(tmp_path, capsys):
    code, _, err = run(make_app(tmp_path), [str(tmp_path / "none.h5:raw"), str(tmp_path / "o.npy")], capsys)
    assert code == 2 and "no such file" in err


def test_uri_from_stdin():
    assert read_uri_from_stdin(io.StringIO("\n  /data/aff_layer \n")) == "/data/aff_layer"
    with pytest.raises(UserError, match="stdin was empty"):
        read_uri_from_stdin(io.StringIO(""))


def test_several_uris_on_stdin():
    text = "/data/seg_a\n\n /data/seg_b \n/data/seg_c\n"
    assert read_uris_from_stdin(io.StringIO(text)) == ["/data/seg_a", "/data/seg_b", "/data/seg_c"]
    # a command that takes one URI says so instead of silently taking the first
    with pytest.raises(UserError, match="stdin has 3 lines"):
        read_uri_from_stdin(io.StringIO(text))
    with pytest.raises(UserError, match="stdin was empty"):
        read_uris_from_stdin(io.StringIO("\n \n"))


@pytest.mark.parametrize("text, expected", [
    ("128", (128, 128, 128)), ("64,128,128", (64, 128, 128)), ("64x128x128", (64, 128, 128)),
    (" 8, 16 ,16", (8, 16, 16)), (32, (32, 32, 32)), ([8, 16, 16], (8, 16, 16)), (None, None),
])
def test_parse_block_size(text, expected):
    assert parse_block_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-8", "8,16", "a", "8,16,16,16", "", "8,,16"])
def test_parse_block_size_rejects(text):
    with pytest.raises(UserError, match="bad block size") as exc:
        parse_block_size(text, "--chunk")
    assert "--chunk 64,128,128" in str(exc.value)


def test_logging_follows_the_current_stderr(capsys):
    import logging

    from pytc_core.cli import setup_logging

    setup_logging()
    logging.getLogger("pytc.test").info("first")
    assert capsys.readouterr().err == "first\n"
    setup_logging(quiet=True)
    logging.getLogger("pytc.test").info("hidden")
    logging.getLogger("pytc.test").warning("second")
    assert capsys.readouterr().err == "second\n"


def test_quiet_keeps_the_progress_lines_of_a_long_run(capsys):
    """-q hides information but not progress (pytc.progress.*): a quiet run of minutes
    must not look like a hang."""
    import logging

    from pytc_core.cli import PROGRESS_LOGGER, setup_logging

    try:
        setup_logging(quiet=True)
        logging.getLogger("pytc.train").info("machine: 2 cores")
        logging.getLogger(f"{PROGRESS_LOGGER}.train").info("step 25/500")
        logging.getLogger(f"{PROGRESS_LOGGER}.train").debug("not at debug")
        assert capsys.readouterr().err == "step 25/500\n"
        setup_logging(verbose=True)
        logging.getLogger(f"{PROGRESS_LOGGER}.train").debug("debug line")
        logging.getLogger("pytc.train").debug("other debug")
        assert capsys.readouterr().err == "debug line\nother debug\n"
    finally:
        setup_logging()


def flags_app():
    """A stage-shaped app: one positional, one option, the shared flags."""
    app = core_cli.make_app("pytc-demo", "0")
    seen = {}

    @app.default
    def demo(src: str, /, *, threshold: float = 0.5, common: CommonFlags = CommonFlags()):
        """Demo.

        Parameters
        ----------
        src
            Input.
        threshold
            A threshold.
        """
        common.setup_logging()
        seen["overrides"] = common.text_overrides()
        return 0

    return app, seen


def test_set_takes_several_pairs_and_repeats(capsys):
    app, seen = flags_app()
    code, _, err = run(app, ["x", "--set", "a=1", "b.c=[2, 3]", "--set", "d='e'"], capsys)
    assert code == 0, err
    assert seen["overrides"] == {"a": "1", "b.c": "[2, 3]", "d": "'e'"}


def test_help_has_no_generated_negative_flags(capsys):
    app, _ = flags_app()
    code, out, _ = run(app, ["--help"], capsys)
    assert code == 0 and "--set" in out and "--threshold" in out
    assert "--empty-" not in out and "--no-" not in out


def test_unknown_option_and_stray_argument_name_the_valid_flags(capsys):
    app, _ = flags_app()
    code, out, err = run(app, ["x", "--treshold", "0.3"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("pytc-demo: error: unknown option '--treshold' (did you mean "
                          "'--threshold'? pytc-demo takes SRC and the options --threshold, "
                          "--config, --set, --overwrite, --quiet, -q, --verbose, -v; see "
                          "`pytc-demo --help`)")
    code, _, err = run(app, ["x", "y"], capsys)
    assert code == 2 and err.count("\n") == 1 and "unexpected argument 'y'" in err
    assert "Unused Tokens" not in err and "--threshold" in err
    code, _, err = run(app, ["x", "threshold"], capsys)
    assert "did you mean '--threshold'?" in err


def test_quiet_and_verbose_together_are_a_usage_error(capsys):
    app, _ = flags_app()
    code, out, err = run(app, ["x", "-q", "-v"], capsys)
    assert code == 2 and out == ""
    assert err == "pytc-demo: error: --quiet and --verbose contradict each other (pass one of them)\n"


def test_several_uris_from_stdin():
    from pytc_core.cli import read_uris_from_stdin, resolve_input_uris

    assert read_uris_from_stdin(io.StringIO("a\n\n  b \n")) == ["a", "b"]
    assert resolve_input_uris(["x", "-", "y"], io.StringIO("a\nb\n")) == ["x", "a", "b", "y"]
    with pytest.raises(UserError, match="more than once"):
        resolve_input_uris(["-", "-"], io.StringIO("a\n"))
    with pytest.raises(UserError, match="stdin was empty"):
        read_uris_from_stdin(io.StringIO("\n"))


def test_local_layers_are_served_with_cors(tmp_path):
    import json
    import threading
    import urllib.request

    from pytc_core.serve import make_server

    labels = np.arange(64, dtype=np.uint32).reshape(4, 4, 4)
    create_volume(str(tmp_path / "seg"), labels.shape, labels.dtype,
                  layer_type="segmentation").write(labels)
    server = make_server(tmp_path, "127.0.0.1", 0)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seg/info", timeout=10) as resp:
            info = json.loads(resp.read())
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert info["type"] == "segmentation" and info["scales"][0]["size"] == [4, 4, 4]
        chunk = info["scales"][0]["key"] + "/0-4_0-4_0-4"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/seg/{chunk}", timeout=10) as resp:
            assert len(resp.read()) > 0
    finally:
        server.shutdown()
        server.server_close()
