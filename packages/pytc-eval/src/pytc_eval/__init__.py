"""pytc-eval: VOI, Rand and skeleton (ERL, NERL) metrics with funlib.evaluate's definitions."""

from pytc_eval.voi import ContingencyTable, adapted_rand_error, rand_voi, rand_voi_from_table

__all__ = ["ContingencyTable", "adapted_rand_error", "rand_voi", "rand_voi_from_table"]
