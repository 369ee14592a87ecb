import json

import numpy as np
import pytest

from inference.ml.search import GENES, SearchBudget, apply_genes, fitness, genes_of, mutate, run_search
from inference.ml.train import TrainConfig


def test_mutation_clamped_and_applied():
    base = TrainConfig(data="", taxonomy="", out="")
    g = genes_of(base)
    assert set(g) == set(GENES) and len(g) == 12
    rng = np.random.default_rng(0)
    children = [mutate(g, rng) for _ in range(50)]
    for c in children:
        assert set(c) == set(g)
        assert c != g, "a child equal to its parent"
        for k, v in c.items():
            lo, hi = GENES[k][:2]
            assert lo <= v <= hi
            if g[k] > 0:
                assert 0.3 * g[k] - 1e-12 <= v <= 3 * g[k] + 1e-12 or v in (lo, hi)
    # each gene mutates with probability 0.9: it moves in most children, both up and down
    for k in GENES:
        moved = [c[k] for c in children if c[k] != g[k]]
        assert len(moved) >= 35, (k, len(moved))
        assert min(moved) < g[k] < max(moved), k
    # a gene at zero leaves zero (a multiplicative step alone could never move it)
    assert any(mutate({**g, "degrees": 0.0}, rng)["degrees"] > 0 for _ in range(5))
    cfg = apply_genes(base, {**g, "lr0": 0.01, "degrees": 20.0, "burn_in": 10.4})
    assert cfg.lr0 == 0.01 and cfg.augment["degrees"] == 20.0 and cfg.burn_in == 10


def test_fitness_weights_macro_recall_precision_f1_and_auc():
    per_class = {
        "red": {"support": 3, "recall": 1.0, "precision": 0.5},
        "blue": {"support": 2, "recall": 0.5, "precision": 1.0},
        "green": {"support": 0, "recall": 0.0, "precision": 0.0},  # absent from the fold: not averaged
    }
    rep = {"hierarchical_product": {"per_class": per_class, "macro_f1": 0.6, "macro_auc": 0.9}}
    assert fitness(rep, (0.25, 0.25, 0.25, 0.25)) == pytest.approx(0.25 * (0.75 + 0.75 + 0.6 + 0.9))
    assert fitness(rep, (1, 0, 0, 0)) == pytest.approx(0.75)
    assert fitness(rep, (0, 0, 0, 1)) == pytest.approx(0.9)
    rep["hierarchical_product"]["macro_auc"] = None  # one class in the fold: AUC counts as chance
    assert fitness(rep, (0, 0, 0, 1)) == pytest.approx(0.5)


def test_tiny_search(tmp_path, taxonomy_file, tiny_data):
    base = TrainConfig(
        data=str(tiny_data),
        taxonomy=str(taxonomy_file),
        out=str(tmp_path / "s"),
        backbone="tiny",
        image_size=32,
        batch_size=8,
        cache_dir="",
        threads=1,
    )
    budget = SearchBudget(generations=1, population=2, epochs=1, folds=2, max_minutes=5)
    res = run_search(base, budget)
    assert res["trials"] == 2 and res["stopped_by_time"] is False and res["weights"] == list(budget.weights)
    lines = [json.loads(s) for s in (tmp_path / "s" / "search.jsonl").read_text().splitlines()]
    assert [(h["generation"], h["individual"]) for h in lines] == [(0, 0), (0, 1)]
    # the first individual is the base recipe, the second a mutation of it
    assert lines[0]["genes"] == genes_of(base)
    assert lines[1]["genes"] != lines[0]["genes"]
    for h in lines:
        assert len(h["fold_fitness"]) == 2 and h["fitness"] == pytest.approx(np.mean(h["fold_fitness"]))
        assert all(0 < f <= 1 for f in h["fold_fitness"])
    # the best is the fitter trial, and best.json holds the returned result
    assert res["best"] == max(lines, key=lambda h: h["fitness"])
    assert json.loads((tmp_path / "s" / "best.json").read_text()) == res
