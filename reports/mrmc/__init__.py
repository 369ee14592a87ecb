"""Multi-reader multi-case (MRMC) analysis of reader studies (Obuchowski-Rockette with DeLong or
jackknife covariances, Hillis ddf). See core (derivations), covariance, compare, binary (yes/no
readers against a continuous model) and planning (sample size)."""

from .compare import readers_vs_model, tests_compared
from .core import (
    METHOD,
    REFERENCE,
    ORResult,
    fixed_reader_test,
    one_sided,
    or_one_sample,
    or_tests,
    random_readers_fixed_cases,
)
from .covariance import covariance, jackknife

__all__ = [
    "METHOD",
    "REFERENCE",
    "ORResult",
    "covariance",
    "fixed_reader_test",
    "jackknife",
    "one_sided",
    "or_one_sample",
    "or_tests",
    "random_readers_fixed_cases",
    "readers_vs_model",
    "tests_compared",
]
