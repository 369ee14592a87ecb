"""The fair comparison of yes/no readers with a continuous model (reports.mrmc.binary)."""

import numpy as np
import pytest

from reports.mrmc.binary import fair_comparison

# 4 positives, 6 negatives; model scores; two yes/no readers
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.7, 0.6, 0.2, 0.8, 0.5, 0.4, 0.3, 0.1, 0.05])
D = np.array(
    [
        [1, 1, 0, 0, 0, 0, 0, 1, 0, 0],  # Se 2/4, Sp 5/6
        [1, 1, 1, 0, 1, 1, 0, 0, 0, 0],
    ]
)  # Se 3/4, Sp 4/6


def test_point_estimates_by_hand():
    f = fair_comparison(Y, D, np.ones_like(D, bool), S, n_boot=200)
    assert f["readers_sensitivity"]["estimate"] == pytest.approx(5 / 8)
    assert f["readers_specificity"]["estimate"] == pytest.approx(3 / 4)
    # specificity >= 3/4 needs >= 4.5 of 6 negatives below the threshold -> 5: threshold above 0.4,
    # i.e. positive when score > 0.5 (0.5 is the 5th smallest negative): positives 0.9, 0.7, 0.6 -> Se 3/4
    assert f["threshold_for_specificity"] == 0.5
    assert f["model_sensitivity_at_readers_specificity"]["estimate"] == pytest.approx(3 / 4)
    # sensitivity >= 5/8 needs 2.5 of 4 positives called -> 3: positive when score >= 0.6: negatives
    # below 0.6 are 5 of 6 -> Sp 5/6
    assert f["threshold_for_sensitivity"] == 0.6
    assert f["model_specificity_at_readers_sensitivity"]["estimate"] == pytest.approx(5 / 6)
    assert f["sensitivity_difference"]["estimate"] == pytest.approx(3 / 4 - 5 / 8)
    for k in ("model_sensitivity_at_readers_specificity", "sensitivity_difference", "specificity_difference"):
        assert f[k]["ci_low"] <= f[k]["estimate"] <= f[k]["ci_high"]
    # the OR analyses compare the readers' rates with the model's at the matched threshold
    assert f["sensitivity_mrmc"]["model_auc"] == pytest.approx(3 / 4)
    assert f["sensitivity_mrmc"]["reader_aucs"] == pytest.approx([0.5, 0.75])
    assert f["specificity_mrmc"]["model_auc"] == pytest.approx(5 / 6)


def test_readers_who_skipped_cases_use_what_they_read():
    read = np.ones_like(D, bool)
    read[0, 7] = False  # reader 1 skipped the negative they got wrong
    f = fair_comparison(Y, D, read, S, n_boot=100)
    assert f["readers_specificity"]["estimate"] == pytest.approx((5 / 5 + 4 / 6) / 2)
