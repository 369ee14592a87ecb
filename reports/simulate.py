"""Simulated reader-study data (benchmark, demo, tests). No Django.

A latent "visibility" z_i ~ N(shift * y_i, 1) per case is shared by every reader and the model
(so readers' errors are correlated through the cases, as in real studies); reader j sees
z_i * skill_j + noise and answers "positive" above their own threshold; the model sees z_i with
less noise. Confidence 1-5 is the distance from the threshold, binned.
"""

from __future__ import annotations

import numpy as np

EXPERIENCE_SKILL = {"intern": 0.7, "resident": 0.9, "attending": 1.1, "expert": 1.3}


def simulate_binary(
    n_cases: int,
    n_readers: int,
    *,
    prevalence: float = 0.35,
    seed: int = 0,
    model_skill: float = 1.6,
    shift: float = 1.6,
    experiences=None,
):
    """Returns dict(y (N,), answers (J, N) 0/1, confidence (J, N) 1..5, model (N,) in (0,1),
    experience list (J,), time_ms (J, N))."""
    rng = np.random.default_rng(seed)
    n_pos = max(1, int(round(prevalence * n_cases)))
    y = np.zeros(n_cases, dtype=int)
    y[:n_pos] = 1
    rng.shuffle(y)
    z = rng.normal(shift * y, 1.0)
    levels = list(EXPERIENCE_SKILL)
    if experiences is None:
        experiences = [levels[j % len(levels)] for j in range(n_readers)]
    skill = np.array([EXPERIENCE_SKILL[e] for e in experiences]) * rng.uniform(0.85, 1.15, n_readers)
    thr = rng.normal(shift / 2, 0.35, n_readers)
    seen = z[None, :] * skill[:, None] + rng.normal(0, 1.0, (n_readers, n_cases)) * 0.9
    answers = (seen > thr[:, None] * skill[:, None]).astype(int)
    dist = np.abs(seen - thr[:, None] * skill[:, None])
    confidence = np.clip(1 + np.floor(dist / 0.45), 1, 5).astype(int)
    model = 1 / (1 + np.exp(-(model_skill * z + rng.normal(0, 0.6, n_cases) - shift * model_skill / 2)))
    time_ms = rng.gamma(4.0, 2500.0, (n_readers, n_cases)).astype(int) + 1500
    return {
        "y": y,
        "answers": answers,
        "confidence": confidence,
        "model": model,
        "experience": experiences,
        "time_ms": time_ms,
    }
