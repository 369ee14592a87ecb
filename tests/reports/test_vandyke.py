"""The Van Dyke reader study (2 modalities x 5 readers x 114 cases) against the published outputs of
MRMCaov (DeLong covariances) and of the Iowa OR-DBM MRMC 2.51 program (jackknife covariances), each
number to the digits those programs print.

The data file is public (RJafroc dataset02, MRMCaov VanDyke) but is not kept in the repository: it
is read from $DERM_READER_STUDIES_DIR or from shared/datasets/reader-studies next to the repository.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from reports import mrmc
from reports.mrmc import planning


def _find() -> Path:
    env = os.environ.get("DERM_READER_STUDIES_DIR")
    here = Path(__file__).resolve()
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "datasets" / "reader-studies" for p in here.parents]
    for c in candidates:
        if (c / "vandyke.csv").is_file():
            return c / "vandyke.csv"
    raise FileNotFoundError("vandyke.csv not found: set DERM_READER_STUDIES_DIR to the folder holding it")


@pytest.fixture(scope="module")
def vd():
    with open(_find(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    T, J, N = 2, 5, 114
    R = np.full((T, J, N), np.nan)
    y = np.full(N, -1)
    for r in rows:
        R[int(r["treatment"]), int(r["reader"]), int(r["case"])] = float(r["rating"])
        y[int(r["case"])] = int(r["truth"])
    assert not np.isnan(R).any() and (y >= 0).all() and y.sum() == 45
    return y, R


def _digits(value, printed: str):
    """value rounds to what the program printed (same number of significant figures / decimals)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    assert round(value, decimals) == pytest.approx(float(printed), abs=10 ** -(decimals + 3)), (value, printed)


def test_mrmcaov_delong(vd):
    y, R = vd
    o = mrmc.tests_compared(y, R, method="delong")
    _digits(o["var_error"], "0.0007921325")
    _digits(o["cov1"], "0.0003420090")
    _digits(o["cov2"], "0.0003395265")
    _digits(o["cov3"], "0.0002358497")
    _digits(o["var_reader"], "0.0015364254")
    _digits(o["var_test_reader"], "0.0002045840")
    _digits(o["ms_t"], "0.004796171")
    _digits(o["ms_tr"], "0.0005510306")
    _digits(o["F"], "4.484854")
    _digits(o["ddf"], "15.06611")
    _digits(o["p_value"], "0.05123303")
    # MRMCaov prints treatment 1 - treatment 2; ours is test 2 - test 1
    _digits(-o["difference"], "-0.04380032")
    _digits(o["se"], "0.0206825")
    _digits(-o["ci_high"], "-0.0878671960")
    _digits(-o["ci_low"], "0.0002665519")


def test_mrmcaov_single_treatments(vd):
    y, R = vd
    for t, (est, se, df) in enumerate(
        [("0.8970370", "0.03307642", "12.59597"), ("0.9408374", "0.02150464", "12.56530")]
    ):
        aucs, S = mrmc.covariance(y, R[t], method="delong")
        r = mrmc.or_one_sample(aucs, S)
        _digits(r.estimate, est)
        _digits(r.se, se)
        _digits(r.ddf, df)


def test_iowa_jackknife(vd):
    y, R = vd
    o = mrmc.tests_compared(y, R, method="jackknife")
    _digits(o["cov1"], "0.00034661")
    _digits(o["cov2"], "0.00034407")
    _digits(o["cov3"], "0.00023903")
    _digits(o["var_error"], "0.00080229")
    _digits(o["var_reader"], "0.00153500")
    _digits(o["var_test_reader"], "0.00020040")
    _digits(o["F"], "4.46")
    _digits(o["ddf"], "15.26")
    _digits(o["p_value"], "0.0517")
    _digits(-o["ci_high"], "-0.08796")
    _digits(-o["ci_low"], "0.00036")


def test_jackknife_equals_refitting_and_missing_readings(vd):
    """The closed-form leave-one-out values equal recomputing the AUC without each case; a reader who
    skipped cases keeps their place, and a complete reader's variance is unchanged by it."""
    from inference.ml.metrics import auc

    y, R = vd
    _, S = mrmc.jackknife(y, R[0, :2])
    N = y.size
    loo = np.array([[auc(np.delete(y, k), np.delete(R[0, j], k)) for k in range(N)] for j in range(2)])
    d = loo - loo.mean(1, keepdims=True)
    np.testing.assert_allclose(S, (N - 1) / N * d @ d.T, rtol=1e-10)
    read = np.ones((5, N), bool)
    read[1, ::7] = False  # reader 2 skipped every 7th case
    est_m, S_m = mrmc.jackknife(y, R[0], read)
    assert est_m[1] == pytest.approx(auc(y[read[1]], R[0, 1, read[1]]))
    assert S_m[0, 0] == pytest.approx(mrmc.jackknife(y, R[0])[1][0, 0])
    full = mrmc.jackknife(y, R[0])[1][1, 1]
    assert 0.9 * full < S_m[1, 1] < 1.4 * full  # fewer cases: a little more variance
    o = mrmc.tests_compared(y, R, read=np.stack([read, read]), method="jackknife")
    assert o["n_readers"] == 5 and 0 < o["p_value"] < 1
    with pytest.raises(ValueError, match="use the jackknife"):
        mrmc.tests_compared(y, R, read=np.stack([read, read]), method="delong")


def test_fixed_reader_and_fixed_case_versions(vd):
    y, R = vd
    o = mrmc.tests_compared(y, R)
    J = 5
    fr = o["var_error"] - o["cov1"] + (J - 1) * (o["cov2"] - o["cov3"])
    assert o["frrc"]["chi2"] == pytest.approx(o["ms_t"] / fr)
    assert o["frrc"]["se"] == pytest.approx(np.sqrt(2 / J * fr))
    assert o["rrfc"]["F"] == pytest.approx(o["ms_t"] / o["ms_tr"]) and o["rrfc"]["ddf"] == 4
    # RRFC of two tests = paired t test of the per-reader differences
    from scipy import stats

    aucs = np.array(o["reader_aucs"])
    assert o["rrfc"]["p_value"] == pytest.approx(stats.ttest_rel(aucs[1], aucs[0]).pvalue)


def test_planning_reproduces_the_pilot_and_grows_with_size(vd):
    y, R = vd
    o = mrmc.tests_compared(y, R)
    comp = planning.components_from(o, n_cases=114)
    p = planning.power(comp, effect=o["difference"], n_readers=5, n_cases=114)
    # at the pilot's own size and effect the noncentrality is the observed F and ddf is Hillis' ddf
    assert p["noncentrality"] == pytest.approx(o["F"])
    assert p["ddf"] == pytest.approx(o["ddf"])
    vdk = planning.VAN_DYKE
    assert (
        planning.power(vdk, effect=0.05, n_readers=10, n_cases=300)["power"]
        > planning.power(vdk, effect=0.05, n_readers=5, n_cases=114)["power"]
    )
    need = planning.cases_needed(vdk, effect=0.05, n_readers=10, power=0.8)
    assert need is not None
    assert planning.power(vdk, effect=0.05, n_readers=10, n_cases=need)["power"] >= 0.8
    assert planning.power(vdk, effect=0.05, n_readers=10, n_cases=need - 1)["power"] < 0.8


def test_non_inferiority_one_sided(vd):
    from scipy import stats

    y, R = vd
    o = mrmc.tests_compared(y, R, margin=0.05)
    n = o["non_inferiority"]
    q = stats.t.ppf(0.95, o["ddf"])
    assert n["lower_bound"] == pytest.approx(o["difference"] - q * o["se"])
    assert n["p_value"] == pytest.approx(stats.t.sf((o["difference"] + 0.05) / o["se"], o["ddf"]))
    assert n["non_inferior"] and n["p_value"] < 0.05
    # the reverse direction (treatment 1 against 2) with a small margin is not non-inferior
    r = mrmc.tests_compared(y, R[::-1], margin=0.01)["non_inferiority"]
    assert not r["non_inferior"] and r["p_value"] > 0.05
