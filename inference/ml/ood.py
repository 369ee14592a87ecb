"""Unfamiliar-photo detector on the fine model's pooled features (out-of-distribution detection).

Two feature-space scores from the literature, both on L2-normalised features z = f / |f|:

- ``knn``: Euclidean distance from z to its k-th nearest training photo (Sun et al. 2022, "Out-of-
  distribution detection with deep nearest neighbors"). k grows with the training bank as in their
  ablation (k = N / 1000, at least 1, at most 50).
- ``mahalanobis``: smallest Mahalanobis distance (squared) to a training class mean under one
  shared covariance (Lee et al. 2018), fitted with Ledoit-Wolf shrinkage because the feature
  dimension is close to the number of photos; on normalised features as in Mueller & Hein 2025
  ("Mahalanobis++"), which makes it far less sensitive to feature norms.

``combined`` (the default) standardises each score by its mean and standard deviation on held-out
in-distribution photos and averages them: a photo far from every training photo, or off the
classes' joint spread, scores high. The threshold is the held-out combined scores' quantile that
flags at most ``max_false_alarm`` (default 5 %) of held-out in-distribution photos, with the
split-conformal count (``threshold_for``) so that the rate holds for new photos too.

    det = FeatureOOD.fit(train_features, train_labels, num_classes)       # training split only
    comps = det.component_scores(heldout_features)                         # {"knn": ..., "mahalanobis": ...}
    det.set_threshold(comps, max_false_alarm=0.05)                        # held-out photos
    det.score(features) -> (N,) ; det.flag(features) -> bool (N,)
    det.state() / FeatureOOD.from_state(tensors, description)             # the artefact's triage_ood.safetensors

Pure helpers for benchmarks that refit the threshold on part of the held-out photos:
``standardiser(comps)``, ``combine(comps, norm, method)``, ``threshold_for(scores, max_false_alarm)``.
"""

from __future__ import annotations

import numpy as np

METHODS = ("combined", "knn", "mahalanobis")
COMPONENTS = ("knn", "mahalanobis")
MAX_BANK = 20000  # training photos kept for kNN (a random subsample beyond)


def normalise_rows(f) -> np.ndarray:
    f = np.asarray(f, dtype=np.float32)
    return f / np.clip(np.linalg.norm(f, axis=1, keepdims=True), 1e-12, None)


def knn_k(n_bank: int) -> int:
    return int(np.clip(round(n_bank / 1000), 1, 50))


def standardiser(comps: dict) -> dict:
    """{component: (mean, sd)} of in-distribution component scores."""
    return {k: (float(np.mean(v)), float(max(np.std(v), 1e-12))) for k, v in comps.items()}


def combine(comps: dict, norm: dict, method: str = "combined") -> np.ndarray:
    """The detector's score from component scores: one standardised component, or their mean."""
    if method not in METHODS:
        raise ValueError(f"unknown OOD method {method!r} (use {', '.join(METHODS)})")
    use = COMPONENTS if method == "combined" else (method,)
    z = [(np.asarray(comps[k], dtype=np.float64) - norm[k][0]) / norm[k][1] for k in use]
    return np.mean(z, axis=0)


def threshold_for(scores, max_false_alarm: float = 0.05) -> float:
    """The ceil((1 - a)(n + 1))-th smallest of n in-distribution scores (split-conformal: a new
    in-distribution photo scores above it with probability at most a on average; the plain quantile
    would hold a only on these photos)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if not len(s):
        raise ValueError("no in-distribution scores to set the threshold on")
    if not 0 <= max_false_alarm < 1:
        raise ValueError(f"max_false_alarm must be in [0, 1), not {max_false_alarm}")
    k = int(np.ceil((1 - max_false_alarm) * (len(s) + 1) - 1e-9))
    return float(s[min(k, len(s)) - 1])


class FeatureOOD:
    def __init__(
        self, bank, k, means_w, whiten, method="combined", norm=None, threshold=None, max_false_alarm=None, n_train=0
    ):
        self.bank = np.asarray(bank, dtype=np.float32)  # (N, F) normalised training features
        self.k = int(k)
        self.means_w = np.asarray(means_w, dtype=np.float32)  # (C', F) whitened class means (classes seen)
        self.whiten = np.asarray(whiten, dtype=np.float32)  # (F, F): |(z - mu) @ W|^2 = Mahalanobis^2
        self.method = method
        self.norm = norm or {}
        self.threshold = threshold
        self.max_false_alarm = max_false_alarm
        self.n_train = int(n_train)

    @classmethod
    def fit(cls, features, labels, num_classes: int, method: str = "combined", seed: int = 0) -> FeatureOOD:
        from sklearn.covariance import LedoitWolf

        if method not in METHODS:
            raise ValueError(f"unknown OOD method {method!r} (use {', '.join(METHODS)})")
        z = normalise_rows(features)
        labels = np.asarray(labels, dtype=int)
        if len(z) < 2:
            raise ValueError(f"the OOD detector needs at least 2 training photos, not {len(z)}")
        classes = [c for c in range(num_classes) if (labels == c).any()]
        means = np.stack([z[labels == c].mean(0) for c in classes])
        centred = z - means[np.searchsorted(classes, labels)]
        prec = LedoitWolf(assume_centered=True).fit(centred.astype(np.float64)).precision_
        prec = (prec + prec.T) / 2
        L = np.linalg.cholesky(prec)  # prec = L L^T, so x^T prec x = |x L|^2
        bank = z
        if len(bank) > MAX_BANK:
            bank = bank[np.sort(np.random.default_rng(seed).permutation(len(bank))[:MAX_BANK])]
        return cls(bank, knn_k(len(bank)), means @ L, L, method, n_train=len(z))

    # ------------------------------------------------------------------ scores
    def component_scores(self, features, batch: int = 256) -> dict:
        z = normalise_rows(features)
        knn, maha = [], []
        for s in range(0, len(z), batch):
            zb = z[s : s + batch]
            sims = zb @ self.bank.T
            k = min(self.k, sims.shape[1])
            kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
            knn.append(np.sqrt(np.clip(2 - 2 * kth, 0, None)))
            zw = zb @ self.whiten
            d = ((zw[:, None, :] - self.means_w[None]) ** 2).sum(-1)
            maha.append(d.min(1))
        e = np.zeros(0)
        return {"knn": np.concatenate(knn) if knn else e, "mahalanobis": np.concatenate(maha) if maha else e}

    def set_threshold(self, comps: dict, max_false_alarm: float = 0.05) -> float:
        """Standardise on held-out in-distribution component scores and set the threshold there."""
        self.norm = standardiser(comps)
        self.threshold = threshold_for(combine(comps, self.norm, self.method), max_false_alarm)
        self.max_false_alarm = max_false_alarm
        return self.threshold

    def score(self, features) -> np.ndarray:
        if not self.norm:
            raise ValueError("the OOD detector has no threshold yet (set_threshold on held-out photos)")
        return combine(self.component_scores(features), self.norm, self.method)

    def flag(self, features) -> np.ndarray:
        return self.score(features) > self.threshold

    # ------------------------------------------------------------------ storage
    def state(self) -> dict:
        import torch

        return {
            "bank": torch.from_numpy(self.bank.astype(np.float16)),
            "means_whitened": torch.from_numpy(self.means_w),
            "whiten": torch.from_numpy(self.whiten),
        }

    def describe(self) -> dict:
        return {
            "method": self.method,
            "features": "fine model's pooled features, L2-normalised",
            "components": {
                "knn": f"distance to the {self.k}-th nearest of {len(self.bank)} training photos (Sun et al. 2022)",
                "mahalanobis": f"Mahalanobis distance to the nearest of {len(self.means_w)} class means, shared "
                "Ledoit-Wolf covariance (Lee et al. 2018; normalised features)",
            },
            "k": self.k,
            "n_train": self.n_train,
            "standardisation": {k: {"mean": m, "sd": s} for k, (m, s) in self.norm.items()},
            "threshold": self.threshold,
            "max_false_alarm": self.max_false_alarm,
        }

    @classmethod
    def from_state(cls, tensors: dict, desc: dict) -> FeatureOOD:
        norm = {k: (float(v["mean"]), float(v["sd"])) for k, v in (desc.get("standardisation") or {}).items()}
        return cls(
            tensors["bank"].float().numpy(),
            desc["k"],
            tensors["means_whitened"].float().numpy(),
            tensors["whiten"].float().numpy(),
            desc.get("method", "combined"),
            norm,
            desc.get("threshold"),
            desc.get("max_false_alarm"),
            desc.get("n_train", 0),
        )
