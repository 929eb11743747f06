"""Fixtures for every pytc-eval test."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def fresh_log_handler():
    """setup_logging keeps its first handler's stream; capsys swaps stderr per test, so each
    test starts without pytc's handler (the command run in it installs its own)."""
    logger = logging.getLogger("pytc")
    for handler in [h for h in logger.handlers if getattr(h, "_pytc", False)]:
        logger.removeHandler(handler)
    yield
