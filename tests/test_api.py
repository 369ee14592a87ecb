"""The DRF API of cases/photos/labels/taxonomy, and its OpenAPI schema and docs."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image

from annotation import services
from annotation.models import Case, LabelChange, Taxonomy
from derm_portal import roles
from tests.factories import CaseFactory, image_bytes


@pytest.fixture
def api(client, users, taxonomy):
    client.force_login(users[roles.DERMATOLOGIST])
    return client


# ------------------------------------------------------------------ schema and docs
@pytest.mark.django_db
def test_schema_generates_and_validates_without_annotation_warnings(tmp_path, capsys):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--file", str(out))
    err = capsys.readouterr().err
    assert "Errors:   0" in err or "Error" not in err, err
    ours = [line for line in err.splitlines() if "annotation/api/" in line or "derm_portal/" in line or "Enum" in line]
    assert ours == [], ours
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/cases/",
        "/api/cases/{id}/",
        "/api/cases/{id}/history/",
        "/api/photos/",
        "/api/photos/{id}/file/",
        "/api/labels/",
        "/api/patients/",
        "/api/taxonomies/",
        "/api/taxonomies/{id}/export/",
        "/api/taxonomies/import/",
    ):
        assert path in paths, path
    params = {p["name"] for p in paths["/api/cases/"]["get"]["parameters"]}
    assert {"q", "status", "diagnosis", "confirmed", "modality", "page", "page_size"} <= params
    upload = paths["/api/photos/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert "CaseStatusEnum" in schema["components"]["schemas"]


@pytest.mark.django_db
def test_schema_and_docs_load_for_a_logged_in_user(api):
    schema = api.get("/api/schema/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content.lower()
    # served from our own static files: the docs work on a hospital network without a CDN
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.content and b"cdn.jsdelivr" not in docs.content
    assert api.get("/api/redoc/").status_code == 200
    browsable = api.get("/api/cases/", HTTP_ACCEPT="text/html")
    assert browsable.status_code == 200 and b"Case List" in browsable.content


@pytest.mark.django_db
def test_schema_needs_login(client):
    assert client.get("/api/schema/").status_code == 403
    assert client.get("/api/docs/").status_code == 403


# ------------------------------------------------------------------ behaviour
@pytest.mark.django_db
def test_case_create_list_detail_and_history(api, users):
    created = api.post(
        "/api/cases/",
        {"patient_code": "PSN-API-1", "body_site": "arm", "age_at_visit": 50},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    case = Case.objects.get(pk=pk)
    assert case.patient.code == "PSN-API-1" and case.created_by == users[roles.DERMATOLOGIST]
    assert api.post("/api/cases/", {"body_site": "arm"}, content_type="application/json").status_code == 400

    photo = api.post(
        "/api/photos/", {"case": pk, "file": SimpleUploadedFile("a.png", image_bytes("PNG")), "modality": "dermoscopic"}
    )
    assert photo.status_code == 201 and photo.json()["modality"] == "dermoscopic"
    for source, code in (("consensus", "nv"), ("histopathology", "mel"), ("histopathology", "bcc")):
        r = api.post(
            "/api/labels/",
            {"case": pk, "sub_class": code, "source": source, "note": "x"},
            content_type="application/json",
        )
        assert r.status_code == 201, r.content
    detail = api.get(f"/api/cases/{pk}/").json()
    assert detail["status"] == "confirmed"
    assert {(lab["sub_class"], lab["source"], lab["confirmed"]) for lab in detail["labels"]} == {
        ("nv", "consensus", False),
        ("bcc", "histopathology", True),
    }
    assert detail["photos"][0]["file_url"] == f"/photos/{detail['photos'][0]['id']}/file"
    history = api.get(f"/api/cases/{pk}/history/").json()
    assert [(h["source"], h["old_sub_class"], h["new_sub_class"]) for h in history] == [
        ("histopathology", "mel", "bcc"),
        ("histopathology", None, "mel"),
        ("consensus", None, "nv"),
    ]
    assert LabelChange.objects.filter(case_id=pk).count() == 3


@pytest.mark.django_db
def test_label_with_unknown_sub_class_is_400(api, case):
    r = api.post(
        "/api/labels/",
        {"case": case.pk, "sub_class": "psoriasis", "source": "consensus"},
        content_type="application/json",
    )
    assert r.status_code == 400 and "psoriasis" in r.json()["sub_class"][0]


@pytest.mark.django_db
def test_photo_file_action_streams_the_clean_image(api, case):
    photo = services.photo_attach(
        case=case, data=image_bytes("JPEG", size=(120, 80)), filename="a.jpg", run_hooks=False
    )
    r = api.get(f"/api/photos/{photo.pk}/file/")
    assert r.status_code == 200 and r["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(b"".join(r.streaming_content))).size == (120, 80)
    thumb = api.get(f"/api/photos/{photo.pk}/file/?w=60")
    assert Image.open(io.BytesIO(thumb.content)).size == (60, 40)


@pytest.mark.django_db
def test_filters_on_photos_and_labels(api, case, users):
    other = CaseFactory(patient=case.patient)
    services.photo_attach(
        case=case, data=image_bytes("JPEG", color=(1, 1, 1)), filename="a.jpg", modality="clinical", run_hooks=False
    )
    services.photo_attach(
        case=other, data=image_bytes("JPEG", color=(2, 2, 2)), filename="b.jpg", modality="dermoscopic", run_hooks=False
    )
    assert api.get(f"/api/photos/?case={case.pk}").json()["count"] == 1
    assert api.get("/api/photos/?modality=dermoscopic").json()["results"][0]["case"] == other.pk
    assert api.get(f"/api/patients/?search={case.patient.code}").json()["count"] == 1


@pytest.mark.django_db
def test_taxonomy_import_errors_are_clear(client, users, taxonomy):
    client.force_login(users[roles.ADMIN])
    bad = client.post(
        "/api/taxonomies/import/", {"meta_classes": {"a": ["x"], "b": ["x"]}}, content_type="application/json"
    )
    assert bad.status_code == 400 and "listed under two parents" in bad.json()["taxonomy"][0]
    good = client.post(
        "/api/taxonomies/import/?default=1",
        {"name": "mini", "meta_classes": {"a": ["x", "y"]}, "malignancy": {"x": 3}},
        content_type="application/json",
    )
    assert good.status_code == 201
    assert Taxonomy.objects.get(is_default=True).name == "mini"
    exported = client.get(f"/api/taxonomies/{good.json()['id']}/export/").json()
    assert exported["meta_classes"] == {"a": ["x", "y"]} and exported["malignancy"] == {"x": 3}
