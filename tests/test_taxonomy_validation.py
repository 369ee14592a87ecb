"""Taxonomy import refuses malformed JSON with a 400 and a message naming the problem
(API and page), and creates nothing: non-text codes, codes over 64 characters, display
names that are not an object of one-line texts, names with line breaks, duplicate keys.
A taxonomy whose name has a line break (stored before this check) still exports."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.models import Taxonomy
from derm_portal import roles

GOOD = {"name": "tiny", "meta_classes": {"benign": ["nv", "bkl"], "malignant": ["mel"]}}

BAD = [
    ({**GOOD, "display_names": ["nv", "Naevus"]}, '"display_names" must be an object'),
    ({**GOOD, "display_names": {"nv": 5}}, 'The display name of "nv" must be text'),
    ({**GOOD, "display_names": {"nv": "Naevus\nsecond line"}}, "line break"),
    ({**GOOD, "display_names": {"nv": "x" * 201}}, "the limit is 200"),
    ({"meta_classes": {"benign": [1, 2]}}, 'A sub-class code under "benign" must be text'),
    ({"meta_classes": {"benign": [{"code": "nv"}]}}, 'A sub-class code under "benign" must be text'),
    ({"meta_classes": {"benign": [None]}}, "must be text"),
    ({"meta_classes": {"benign": ["n" * 65]}}, "is 65 characters long; the limit is 64"),
    ({"meta_classes": {"m" * 65: ["nv"]}}, "A meta-class code"),
    ({"meta_classes": {"benign": ["nv\tx"]}}, "control character"),
    ({**GOOD, "name": "two\nlines"}, "The taxonomy name"),
    ({**GOOD, "name": 7}, "The taxonomy name must be text"),
    ({**GOOD, "malignancy": ["nv", 1]}, '"malignancy" must be an object'),
    ({**GOOD, "malignancy": {"mel": True}}, "must be 1, 2, 3 or null"),
    ({**GOOD, "version": "two"}, '"version" must be a whole number'),
    ({**GOOD, "description": ["x"]}, '"description" must be text'),
]


@pytest.fixture
def admin_client(client, users, taxonomy):
    client.force_login(users[roles.ADMIN])
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("payload, message", BAD, ids=[m for _, m in BAD])
def test_api_import_refuses_with_a_clear_400(admin_client, payload, message):
    before = Taxonomy.objects.count()
    response = admin_client.post("/api/taxonomies/import/", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert message in response.json()["taxonomy"][0]
    assert Taxonomy.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize("payload, message", BAD[:6], ids=[m for _, m in BAD[:6]])
def test_page_import_refuses_with_a_message(admin_client, payload, message):
    before = Taxonomy.objects.count()
    upload = SimpleUploadedFile("bad.json", json.dumps(payload).encode())
    response = admin_client.post("/taxonomy/", {"action": "import", "file": upload}, follow=True)
    assert response.status_code == 200
    assert message in " ".join(str(m) for m in response.context["messages"])
    assert Taxonomy.objects.count() == before


DUPLICATE = b'{"name": "dup", "meta_classes": {"benign": ["nv"], "benign": ["bkl"]}}'


@pytest.mark.django_db
def test_duplicate_json_keys_are_refused_not_dropped(admin_client):
    before = Taxonomy.objects.count()
    response = admin_client.post("/api/taxonomies/import/", data=DUPLICATE, content_type="application/json")
    assert response.status_code == 400 and 'the key "benign" appears twice' in response.json()["taxonomy"][0]
    upload = SimpleUploadedFile("dup.json", DUPLICATE)
    page = admin_client.post("/taxonomy/", {"action": "import", "file": upload}, follow=True)
    assert any('dup.json: the key "benign" appears twice' in str(m) for m in page.context["messages"])
    assert Taxonomy.objects.count() == before


@pytest.mark.django_db
def test_page_name_field_with_a_line_break_is_refused(admin_client):
    upload = SimpleUploadedFile("ok.json", json.dumps(GOOD).encode())
    page = admin_client.post("/taxonomy/", {"action": "import", "file": upload, "name": "a\rb"}, follow=True)
    assert any("The taxonomy name" in str(m) for m in page.context["messages"])
    assert not Taxonomy.objects.filter(name__startswith="a").exists()


@pytest.mark.django_db
def test_valid_import_still_works(admin_client):
    payload = {**GOOD, "display_names": {"nv": "Naevus"}, "malignancy": {"nv": 1, "bkl": 1, "mel": 3}, "version": 2}
    response = admin_client.post("/api/taxonomies/import/", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 201, response.content[:300]
    tax = Taxonomy.objects.get(name="tiny")
    assert tax.sub_classes.get(code="nv").display_name == "Naevus"


@pytest.mark.django_db
def test_export_of_a_name_with_a_line_break_is_not_a_500(admin_client, taxonomy):
    Taxonomy.objects.filter(pk=taxonomy.pk).update(name='HAM\r\n"10000"')
    response = admin_client.get(f"/taxonomy/{taxonomy.pk}/export.json")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="taxonomy-HAM-10000-v1.json"'
    assert json.loads(b"".join(response) if response.streaming else response.content)["name"] == 'HAM\r\n"10000"'
