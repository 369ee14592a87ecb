import pytest

from annotation import selectors, services
from annotation.models import SubClass


def test_default_taxonomy_has_ham10000_tree_and_grades(taxonomy):
    exported = selectors.taxonomy_export(taxonomy=taxonomy)
    assert exported["meta_classes"] == {
        "melanocytic": ["nv", "mel"],
        "keratinocytic": ["akiec", "bcc", "bkl"],
        "dermal_vascular": ["df", "vasc"],
    }
    assert exported["malignancy"] == {"nv": 1, "mel": 3, "akiec": 2, "bcc": 2, "bkl": 1, "df": 1, "vasc": 1}
    assert services.taxonomy_load_default().pk == taxonomy.pk  # idempotent


def test_sub_class_under_two_parents_is_rejected(db):
    with pytest.raises(services.TaxonomyError, match='"bcc" is listed under two parents'):
        services.taxonomy_import(data={"meta_classes": {"a": ["bcc"], "b": ["bcc"]}})
    assert not SubClass.objects.exists()


def test_export_then_import_round_trip_makes_new_version(taxonomy):
    data = selectors.taxonomy_export(taxonomy=taxonomy)
    again = services.taxonomy_import(data=data)
    assert again.version == taxonomy.version + 1
    exported = selectors.taxonomy_export(taxonomy=again)
    for key in ("meta_classes", "malignancy", "display_names"):
        assert exported[key] == data[key]
