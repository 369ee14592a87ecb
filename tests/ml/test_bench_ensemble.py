"""bench/ensemble_runs.py: the two ways of averaging trainings of one split, and the split check."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SPEC = importlib.util.spec_from_file_location(
    "ensemble_runs", Path(__file__).resolve().parents[2] / "bench" / "ensemble_runs.py"
)
ensemble_runs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ensemble_runs)


def _run(p_fine, p_coarse):
    return {"p_fine": np.array(p_fine, dtype=float), "p_coarse": np.array(p_coarse, dtype=float)}


RUNS = [
    _run([[0.6, 0.3, 0.1]], [[0.9, 0.1]]),
    _run([[0.2, 0.2, 0.6]], [[0.3, 0.7]]),
    _run([[0.1, 0.8, 0.1]], [[0.6, 0.4]]),
]


def test_fine_mode_averages_the_fine_models_and_keeps_the_first_coarse_model():
    pf, pc = ensemble_runs.ensemble(RUNS, (1, 2), "fine")
    assert np.allclose(pf, [[0.15, 0.5, 0.35]])
    assert np.allclose(pc, [[0.3, 0.7]])  # the subset's first member, not run 0


def test_both_mode_averages_both_levels():
    pf, pc = ensemble_runs.ensemble(RUNS, (0, 1, 2), "both")
    assert np.allclose(pf, [[0.3, 13 / 30, 0.8 / 3]])
    assert np.allclose(pc, [[0.6, 0.4]])


def test_models_of_another_split_are_refused(monkeypatch):
    class P:
        def __init__(self, cases):
            self.manifest = {"split": {"test_cases": cases}}

    made = iter(
        [
            {"predictor": P(["a", "b"]), "y": np.array([0, 1]), **RUNS[0]},
            {"predictor": P(["a", "c"]), "y": np.array([0, 1]), **RUNS[1]},
        ]
    )
    monkeypatch.setattr(ensemble_runs, "model_probabilities", lambda *a, **k: next(made))
    monkeypatch.setattr("sys.argv", ["ensemble_runs.py", "m1", "m2", "data"])
    with pytest.raises(SystemExit, match="m2 was not evaluated on the held-out photos of m1"):
        ensemble_runs.main()
