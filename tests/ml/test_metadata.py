import json

import numpy as np
import pytest

from inference.ml.metadata import MetadataModel, age_bin, read_fields


def test_read_fields_takes_ham_and_generic_columns_and_drops_unknowns():
    assert read_fields({"age": "45.0", "sex": "male", "localization": "Lower extremity"}) == {
        "age": "4",
        "sex": "male",
        "site": "lower extremity",
    }
    # generic labels.csv columns, other spellings, case-insensitive names
    assert read_fields({"Age_approx": "85", "Gender": "F", "anatom_site_general": "head/neck"}) == {
        "age": "8",
        "sex": "female",
        "site": "head/neck",
    }
    assert read_fields({"age": "", "sex": "unknown", "localization": "unknown"}) == {
        "age": None,
        "sex": None,
        "site": None,
    }
    assert read_fields({"age": "nan", "sex": "other"}) == {"age": None, "sex": None, "site": None}
    assert read_fields(None) == {"age": None, "sex": None, "site": None}
    # the first column with a value wins: an empty "site" does not hide "localization"
    assert read_fields({"site": "", "localization": "face"})["site"] == "face"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("0", "0"),
        ("9.9", "0"),
        ("10", "1"),
        ("79", "7"),
        ("80", "8"),
        ("104", "8"),
        ("-3", None),
        ("abc", None),
        ("inf", None),
        (None, None),
    ],
)
def test_age_bins_by_decade(raw, expected):
    assert age_bin(raw) == expected


def _toy():
    # class 0 lives on the face of the old, class 1 on the trunk of the young; class 2 anywhere
    metas, y = [], []
    for _ in range(40):
        metas.append({"age": "75", "localization": "face"})
        y.append(0)
        metas.append({"age": "25", "localization": "trunk"})
        y.append(1)
        metas.append({"age": "50", "localization": "back", "sex": "unknown"})
        y.append(2)
    return metas, np.array(y)


def test_fit_counts_and_smooths_toward_the_prior():
    metas, y = _toy()
    mm = MetadataModel.fit(metas, y, ["a", "b", "c"], alpha=20)
    assert set(mm.tables) == {"age", "site"}  # "unknown" sex is no value
    prior = np.array(mm.prior)
    np.testing.assert_allclose(prior, [1 / 3] * 3, atol=1e-4)
    # 40 face photos, all class a: (40 + 20/3) / 60 for a, (20/3) / 60 for b and c
    np.testing.assert_allclose(mm.tables["site"]["face"], [(40 + 20 / 3) / 60, 20 / 3 / 60, 20 / 3 / 60], atol=1e-5)
    assert mm.counts["site"] == {"back": 40, "face": 40, "trunk": 40}


def test_apply_moves_probability_toward_what_the_metadata_says_and_leaves_missing_alone():
    metas, y = _toy()
    mm = MetadataModel.fit(metas, y, ["a", "b", "c"])
    p = np.array([[0.4, 0.4, 0.2]] * 4)
    q = mm.apply(
        p,
        [
            {"age": "70", "localization": "face"},  # both fields say a
            {"localization": "trunk"},  # site says b
            {"localization": "elbow", "age": "?"},  # unseen value, no age: no information
            {},
        ],
    )
    assert q[0, 0] > 0.8 and q[0].argmax() == 0
    assert q[1].argmax() == 1 and q[1, 1] > q[1, 0]
    np.testing.assert_allclose(q[2:], p[2:])
    np.testing.assert_allclose(q.sum(1), 1)
    # the two fields multiply: age and site together move further than site alone
    q_site = mm.apply(p[:1], [{"localization": "face"}])
    assert q[0, 0] > q_site[0, 0] > p[0, 0]
    # None means no metadata at all
    np.testing.assert_array_equal(mm.apply(p, None), p)


def test_weight_tempers_the_factors():
    metas, y = _toy()
    p = np.array([[0.4, 0.4, 0.2]])
    m = [{"localization": "trunk"}]
    full = MetadataModel.fit(metas, y, list("abc"), weight=1.0).apply(p, m)
    half = MetadataModel.fit(metas, y, list("abc"), weight=0.5).apply(p, m)
    none = MetadataModel.fit(metas, y, list("abc"), weight=0.0).apply(p, m)
    assert full[0, 1] > half[0, 1] > p[0, 1]
    np.testing.assert_allclose(none, p)
    with pytest.raises(ValueError, match="weight"):
        MetadataModel.fit(metas, y, list("abc"), weight=1.5)


def test_fit_without_any_field_gives_none_and_bad_shapes_are_refused():
    assert MetadataModel.fit([{"dx_type": "histo"}, {}], [0, 1], ["a", "b"]) is None
    metas, y = _toy()
    with pytest.raises(ValueError, match="metadata rows"):
        MetadataModel.fit(metas[:3], y, list("abc"))
    mm = MetadataModel.fit(metas, y, list("abc"))
    with pytest.raises(ValueError, match="2 metadata rows for 1 photos"):
        mm.apply(np.array([[0.3, 0.3, 0.4]]), [{}, {}])


def test_round_trip_through_json_gives_the_same_factors():
    metas, y = _toy()
    mm = MetadataModel.fit(metas, y, list("abc"), alpha=5, weight=0.7)
    back = MetadataModel.from_dict(json.loads(json.dumps(mm.to_dict())))
    probe = [{"age": "30", "localization": "trunk"}, {"sex": "male"}, {"localization": "face"}]
    np.testing.assert_allclose(back.factors(probe), mm.factors(probe))
    assert (back.alpha, back.weight, back.classes) == (5.0, 0.7, list("abc"))


def test_fuse_with_metadata_counts_the_metadata_once_per_output():
    from inference.ml.metadata import fuse_with_metadata
    from inference.ml.taxonomy import Taxonomy, fuse

    tax = Taxonomy.from_dict({"meta_classes": {"M": ["a", "b"], "N": ["c"]}})
    metas, y = _toy()
    fm = MetadataModel.fit(metas, y, ["a", "b", "c"])
    cm = MetadataModel.fit(metas, tax.parent_index[y], ["M", "N"])
    pf, pc = np.array([[0.3, 0.3, 0.4]]), np.array([[0.5, 0.5]])
    m = [{"localization": "trunk"}]  # b's site
    f = fm.factors(m)[0]
    flat, coarse = fuse_with_metadata(pc, pf, tax, "flat", fm, cm, m)
    np.testing.assert_allclose(flat[0], pf[0] * f / (pf[0] * f).sum())
    np.testing.assert_allclose(coarse[0], pc[0] * cm.factors(m)[0] / (pc[0] * cm.factors(m)[0]).sum())
    prod, _ = fuse_with_metadata(pc, pf, tax, "product", fm, cm, m)
    p0 = fuse(pc, pf, tax, "product")[0]
    np.testing.assert_allclose(prod[0], p0 * f / (p0 * f).sum())
    hard, _ = fuse_with_metadata(pc, pf, tax, "hard", fm, cm, m)
    assert hard[0, 2] == 0 and hard[0, 1] > hard[0, 0]  # trunk moves the gate to M and b above a
    for method in ("flat", "product", "hard"):
        np.testing.assert_array_equal(
            fuse_with_metadata(pc, pf, tax, method, fm, cm, None)[0], fuse(pc, pf, tax, method)
        )
