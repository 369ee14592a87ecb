"""Evolutionary hyperparameter search (METHODS.md section 5).

``run_search(base: TrainConfig, budget: SearchBudget, progress=None) -> dict``

- 12 genes: lr0, lrf, momentum, weight_decay, burn_in, hsv_h, hsv_s, hsv_v, degrees, translate,
  scale, shear; the first individual is the base configuration.
- Each generation has ``population`` individuals. An individual is the mean of the best (up to) 5
  individuals seen so far, mutated gene-wise with factor m = min(3, max(g * r_g * r * delta + 1, 0.3)),
  r_g ~ N(0, 1) applied with probability 0.9, r ~ U(0, 1) shared by the individual; g = 10 and
  delta = 0.2 for lr0, degrees (rotation) and shear, g = 1 and delta = 0.2 for the other genes;
  every gene is clamped to its range.
- Fitness S = w1 * recall + w2 * precision + w3 * F1 + w4 * AUC (macro, product-fused
  sub-class probabilities) averaged over ``folds`` case-grouped folds; default w = (0.25, 0.25, 0.25, 0.25).
- Stops after ``generations`` generations or ``max_minutes`` (checked before each trial).
Results are appended to ``<out>/search.jsonl``; the best genes are written to ``<out>/best.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .train import TrainConfig, train

# gene: (min, max, g, delta, where)   where: "cfg" (TrainConfig field) or "aug" (AugmentConfig field)
GENES = {
    "lr0": (1e-5, 1e-1, 10.0, 0.2, "cfg"),
    "lrf": (1e-5, 0.5, 1.0, 0.2, "cfg"),
    "momentum": (0.6, 0.98, 1.0, 0.2, "cfg"),
    "weight_decay": (0.0, 0.1, 1.0, 0.2, "cfg"),
    "burn_in": (0, 200, 1.0, 0.2, "cfg"),
    "hsv_h": (0.0, 0.1, 1.0, 0.2, "aug"),
    "hsv_s": (0.0, 0.9, 1.0, 0.2, "aug"),
    "hsv_v": (0.0, 0.9, 1.0, 0.2, "aug"),
    "degrees": (0.0, 45.0, 10.0, 0.2, "aug"),
    "translate": (0.0, 0.5, 1.0, 0.2, "aug"),
    "scale": (0.0, 0.9, 1.0, 0.2, "aug"),
    "shear": (0.0, 10.0, 10.0, 0.2, "aug"),
}
MUTATION_PROB = 0.9


@dataclass
class SearchBudget:
    generations: int = 3
    population: int = 5
    epochs: int = 1
    coarse_epochs: int = 1
    folds: int = 2
    max_minutes: float = 30.0
    weights: tuple = (0.25, 0.25, 0.25, 0.25)
    seed: int = 0


def genes_of(cfg: TrainConfig) -> dict:
    from .data import AugmentConfig

    aug = AugmentConfig.from_overrides(cfg.augment)
    return {k: float(getattr(cfg if w == "cfg" else aug, k)) for k, (_, _, _, _, w) in GENES.items()}


def apply_genes(cfg: TrainConfig, genes: dict) -> TrainConfig:
    c = {k: v for k, v in genes.items() if GENES[k][4] == "cfg"}
    if "burn_in" in c:
        c["burn_in"] = int(round(c["burn_in"]))
    aug = {**cfg.augment, **{k: v for k, v in genes.items() if GENES[k][4] == "aug"}}
    return replace(cfg, augment=aug, **c)


def mutate(parent: dict, rng: np.random.Generator) -> dict:
    r = rng.random()
    child = {}
    for k, v in parent.items():
        lo, hi, g, delta, _ = GENES[k]
        rg = rng.standard_normal() if rng.random() < MUTATION_PROB else 0.0
        m = min(3.0, max(g * rg * r * delta + 1.0, 0.3))
        child[k] = float(np.clip(v * m if v != 0 else (hi - lo) * 0.01 * abs(rg), lo, hi))
    return child


def fitness(rep: dict, w) -> float:
    r = rep["hierarchical_product"]
    pc = r["per_class"]
    present = [c for c in pc.values() if c["support"] > 0]
    recall = float(np.mean([c["recall"] for c in present]))
    precision = float(np.mean([c["precision"] for c in present]))
    return w[0] * recall + w[1] * precision + w[2] * r["macro_f1"] + w[3] * (r["macro_auc"] or 0.5)


def run_search(base: TrainConfig, budget: SearchBudget, progress=None) -> dict:
    out = Path(base.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(budget.seed)
    t0 = time.time()
    history = []
    log = out / "search.jsonl"
    stop = False
    for gen in range(budget.generations):
        for ind in range(budget.population):
            if (time.time() - t0) / 60 > budget.max_minutes:
                stop = True
                break
            if not history:
                genes = genes_of(base)
            else:
                best = sorted(history, key=lambda h: -h["fitness"])[:5]
                parent = {k: float(np.mean([h["genes"][k] for h in best])) for k in GENES}
                genes = mutate(parent, rng)
            scores = []
            for f in range(budget.folds):
                tdir = out / "trials" / f"g{gen}_i{ind}_f{f}"
                cfg = replace(
                    apply_genes(base, genes),
                    out=str(tdir),
                    epochs=budget.epochs,
                    coarse_epochs=budget.coarse_epochs,
                    holdout=None,
                    folds=budget.folds,
                    fold=f,
                    binary_epochs=0,
                    fine_models=1,
                    triage=False,
                )  # one fine model ranks a recipe at half the cost
                train(cfg, progress=progress)
                rep = json.loads((tdir / "metrics.json").read_text())
                scores.append(fitness(rep, budget.weights))
                shutil.rmtree(tdir, ignore_errors=True)
            h = {
                "generation": gen,
                "individual": ind,
                "genes": genes,
                "fitness": float(np.mean(scores)),
                "fold_fitness": scores,
                "minutes": (time.time() - t0) / 60,
            }
            history.append(h)
            with open(log, "a") as fh:
                fh.write(json.dumps(h) + "\n")
            if progress:
                progress(
                    {"stage": "search", "event": "trial", "generation": gen, "individual": ind, "fitness": h["fitness"]}
                )
        if stop:
            break
    best = max(history, key=lambda h: h["fitness"]) if history else None
    res = {
        "best": best,
        "trials": len(history),
        "minutes": (time.time() - t0) / 60,
        "stopped_by_time": stop,
        "weights": list(budget.weights),
    }
    (out / "best.json").write_text(json.dumps(res, indent=2))
    return res
