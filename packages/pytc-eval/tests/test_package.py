"""The package's top-level exports resolve, and the CLI module does not import numba."""

import subprocess
import sys

import pytc_eval


def test_exports_resolve():
    assert set(pytc_eval.__all__) == {"__version__", *pytc_eval._EXPORTS}
    for name in pytc_eval.__all__:
        assert getattr(pytc_eval, name) is not None
    assert pytc_eval.rand_voi.__module__ == "pytc_eval.voi"


def test_cli_import_is_light():
    code = "import sys, pytc_eval.cli; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
