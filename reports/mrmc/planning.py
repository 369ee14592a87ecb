"""Study planning: power and sample size of the OR two-test comparison (e.g. AI-aided vs unaided, or
readers vs a model) from pilot variance components (Hillis, Obuchowski & Berbaum, "Power estimation
for multireader ROC methods: an updated and unified approach", Acad Radiol 2011;18:129-142).

With OR components estimated on a pilot of N0 cases (s2_TR, and the case-sampling error variance and
covariances var_e, Cov1, Cov2, Cov3, which scale as N0/N for N cases), J readers and effect delta:

    D    = s2_TR + (N0/N) (var_e - Cov1 + (J-1) max(Cov2 - Cov3, 0))
    lambda = J delta^2 / (2 D)         (noncentrality of F on 1 and ddf degrees of freedom)
    ddf  = D^2 / ((s2_TR + (N0/N) (var_e - Cov1 - max(Cov2 - Cov3, 0)))^2 / (J - 1))
    power = P(F(1, ddf, lambda) > F_{1-alpha}(1, ddf))

At the pilot's own J, N and observed effect, lambda equals the pilot's F and ddf its Hillis ddf (tested).
A negative s2_TR estimate is taken as 0. The default components are the Van Dyke study's (MRMCaov,
DeLong covariances; 5 readers, 114 cases, AUCs near 0.9).
"""

from __future__ import annotations

import math

from scipy import stats

VAN_DYKE = {
    "var_test_reader": 0.0002045840,
    "var_error": 0.0007921325,
    "cov1": 0.0003420090,
    "cov2": 0.0003395265,
    "cov3": 0.0002358497,
    "n_cases": 114,
    "source": "Van Dyke et al. 1993 (5 readers, 114 cases; published MRMCaov components)",
}


def components_from(result: dict, *, n_cases: int, source: str = "this study's pilot readings") -> dict:
    """Planning components from an ``or_tests`` / ``tests_compared`` result on ``n_cases`` cases."""
    return {k: float(result[k]) for k in ("var_test_reader", "var_error", "cov1", "cov2", "cov3")} | {
        "n_cases": int(n_cases),
        "source": source,
    }


def power(comp: dict, *, effect: float, n_readers: int, n_cases: int, alpha: float = 0.05) -> dict:
    J, c = int(n_readers), comp["n_cases"] / float(n_cases)
    if J < 2 or n_cases < 2:
        raise ValueError("planning needs at least two readers and two cases")
    s2tr = max(comp["var_test_reader"], 0.0)
    c23 = max(comp["cov2"] - comp["cov3"], 0.0)
    D = s2tr + c * (comp["var_error"] - comp["cov1"] + (J - 1) * c23)
    E = s2tr + c * (comp["var_error"] - comp["cov1"] - c23)
    lam = J * effect**2 / (2 * D) if D > 0 else math.inf
    ddf = D**2 / (E**2 / (J - 1)) if E > 0 else math.inf
    if math.isfinite(ddf):
        crit = float(stats.f.ppf(1 - alpha, 1, ddf))
        pw = float(stats.ncf.sf(crit, 1, ddf, lam)) if math.isfinite(lam) else 1.0
    else:
        crit = float(stats.chi2.ppf(1 - alpha, 1))
        pw = float(stats.ncx2.sf(crit, 1, lam)) if math.isfinite(lam) else 1.0
    return {
        "n_readers": J,
        "n_cases": int(n_cases),
        "effect": effect,
        "alpha": alpha,
        "noncentrality": lam,
        "ddf": ddf,
        "power": pw,
    }


def cases_needed(
    comp: dict, *, effect: float, n_readers: int, power: float = 0.8, alpha: float = 0.05, max_cases: int = 20000
) -> int | None:
    """Fewest cases for ``power`` with ``n_readers`` readers (None when even max_cases is not enough:
    the reader-by-test variance alone then limits the power, so more readers are needed)."""

    def pw(n):
        return globals()["power"](comp, effect=effect, n_readers=n_readers, n_cases=n, alpha=alpha)["power"]

    if pw(max_cases) < power:
        return None
    lo, hi = 2, max_cases
    while lo < hi:
        mid = (lo + hi) // 2
        if pw(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def table(
    comp: dict, *, effect: float, power: float = 0.8, alpha: float = 0.05, readers=(3, 4, 5, 6, 8, 10, 12, 15, 20)
) -> list[dict]:
    """Cases needed for each number of readers."""
    return [
        {"n_readers": J, "n_cases": cases_needed(comp, effect=effect, n_readers=J, power=power, alpha=alpha)}
        for J in readers
    ]
