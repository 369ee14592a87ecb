import json

import numpy as np

from inference.ml.search import GENES, SearchBudget, apply_genes, genes_of, mutate, run_search
from inference.ml.train import TrainConfig


def test_mutation_clamped_and_applied():
    base = TrainConfig(data="", taxonomy="", out="")
    g = genes_of(base)
    assert set(g) == set(GENES) and len(g) == 12
    rng = np.random.default_rng(0)
    for _ in range(50):
        c = mutate(g, rng)
        for k, v in c.items():
            lo, hi = GENES[k][:2]
            assert lo <= v <= hi
            if g[k] > 0:
                assert 0.3 * g[k] - 1e-12 <= v <= 3 * g[k] + 1e-12 or v in (lo, hi)
    cfg = apply_genes(base, {**g, "lr0": 0.01, "degrees": 20.0, "burn_in": 10.4})
    assert cfg.lr0 == 0.01 and cfg.augment["degrees"] == 20.0 and cfg.burn_in == 10


def test_tiny_search(tmp_path, taxonomy_file, tiny_data):
    base = TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "s"), backbone="tiny",
                       image_size=32, batch_size=8, cache_dir="", threads=1)
    res = run_search(base, SearchBudget(generations=1, population=2, epochs=1, folds=2, max_minutes=5))
    assert res["trials"] == 2 and res["best"]["fitness"] > 0
    lines = (tmp_path / "s" / "search.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["generation"] == 0
