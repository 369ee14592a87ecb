import numpy as np
import pytest
import torch

from inference.ml.taxonomy import Taxonomy, TaxonomyError, fuse, malignancy_grade, malignancy_score, meta_from_fine

from .conftest import TAX


def tax():
    return Taxonomy.from_dict(TAX)


def test_load_and_queries(tmp_path):
    t = tax()
    assert t.meta_classes == ["warm", "cool"]
    assert t.sub_classes == ["red", "orange", "blue", "green"]
    assert t.parent("blue") == "cool" and t.grade("red") == 3
    assert t.parent_index.tolist() == [0, 0, 1, 1]
    assert t.extra["display_names"]["red"] == "Red lesion"
    p = tmp_path / "t.json"
    t.to_json(p)
    t2 = Taxonomy.from_json(p)
    assert t2.sub_classes == t.sub_classes and t2.grade("blue") == 2


def test_ham_taxonomy_file():
    from pathlib import Path

    import inference.ml as pkg

    t = Taxonomy.from_json(Path(pkg.__file__).parent / "taxonomies" / "ham10000.json")
    assert set(t.sub_classes) == {"nv", "mel", "akiec", "bcc", "bkl", "df", "vasc"}
    assert t.grade("mel") == 3 and t.grade("bcc") == 2 and t.grade("nv") == 1
    assert t.parent("df") == "dermal_vascular"


def test_two_parents_rejected():
    d = {"meta_classes": {"a": ["x", "y"], "b": ["z", "y"]}}
    with pytest.raises(TaxonomyError) as e:
        Taxonomy.from_dict(d)
    msg = str(e.value)
    assert "'y'" in msg and "'a'" in msg and "'b'" in msg and "two parents" in msg


def test_no_grades_and_bad_grades():
    t = Taxonomy.from_dict({"meta_classes": {"a": ["x"], "b": ["y"]}})
    assert not t.has_grades and t.grade("x") is None
    assert malignancy_score([0.5, 0.5], t) is None
    with pytest.raises(TaxonomyError):
        Taxonomy.from_dict({"meta_classes": {"a": ["x"]}, "malignancy": {"x": 5}})
    with pytest.raises(TaxonomyError):
        Taxonomy.from_dict({"meta_classes": {"a": ["x"]}, "malignancy": {"q": 1}})
    with pytest.raises(TaxonomyError):
        Taxonomy.from_dict({"meta_classes": {"a": []}})


def test_fusion_formulas():
    t = tax()
    pc = np.array([0.7, 0.3])
    pf = np.array([0.1, 0.3, 0.4, 0.2])
    np.testing.assert_allclose(fuse(pc, pf, t, "flat"), pf)
    np.testing.assert_allclose(fuse(pc, pf, t, "hard"), [0.1, 0.3, 0.0, 0.0])
    prod = np.array([0.07, 0.21, 0.12, 0.06])
    np.testing.assert_allclose(fuse(pc, pf, t, "product"), prod / prod.sum())
    # the product can change the top-1: flat says blue, product says orange
    assert np.argmax(pf) == 2 and np.argmax(fuse(pc, pf, t, "product")) == 1
    # batched + torch
    out = fuse(torch.tensor(np.stack([pc, pc[::-1]])), torch.tensor(np.stack([pf, pf])), t, "product")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(1).numpy(), [1, 1])


def test_hard_gate_edge_cases():
    t = tax()
    pf = np.array([0.1, 0.3, 0.4, 0.2])
    # tie in the coarse argmax goes to the first meta-class in taxonomy order
    np.testing.assert_allclose(fuse(np.array([0.5, 0.5]), pf, t, "hard"), [0.1, 0.3, 0.0, 0.0])
    # the gate follows the coarse argmax even when the fine model disagrees
    np.testing.assert_allclose(
        fuse(np.array([0.2, 0.8]), np.array([0.6, 0.3, 0.05, 0.05]), t, "hard"), [0, 0, 0.05, 0.05]
    )
    # product with zero overlap falls back to the fine probabilities
    np.testing.assert_allclose(fuse(np.array([1.0, 0.0]), np.array([0, 0, 0.5, 0.5]), t, "product"), [0, 0, 0.5, 0.5])
    with pytest.raises(ValueError):
        fuse(np.array([1.0, 0.0]), pf, t, "bogus")


def test_meta_from_fine_and_malignancy():
    t = tax()
    pf = np.array([[0.1, 0.3, 0.4, 0.2], [1, 0, 0, 0]])
    np.testing.assert_allclose(meta_from_fine(pf, t), [[0.4, 0.6], [1, 0]])
    s = malignancy_score(pf, t)
    np.testing.assert_allclose(s, [0.1 * 3 + 0.3 + 0.8 + 0.2, 3.0])
    assert malignancy_grade(1.49) == 1 and malignancy_grade(1.5) == 2 and malignancy_grade(2.49) == 2
    assert malignancy_grade(2.5) == 3
    assert malignancy_grade(s).tolist() == [2, 3]
