"""Who may see and change clinical data: every role (and anonymous) against every page
and API endpoint of cases, photos, labels and taxonomy, plus the OpenAPI schema/docs.

Read the table: one row per endpoint, one column per role, the expected HTTP status.
`login` = redirected to the login page. Writes are checked for their effect too: a
refused request changes nothing, an allowed one changes what it should.
Each (row, role) pair is its own test with a fresh database. The world's case has a
consensus label only, so a coordinator (confirmed cases only) gets 404 on it.
"""

from __future__ import annotations

import io

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation import services
from annotation.models import Case, DiagnosisLabel, Photo, SubClass, Taxonomy
from derm_portal import roles
from tests.factories import CaseFactory, image_bytes

ROLES = ["anon", "dermatologist", "annotator", "coordinator", "reader", "admin"]

MATRIX = """
| name                         | method | url                                          | anon  | dermatologist | annotator | coordinator | reader | admin |
|------------------------------|--------|----------------------------------------------|-------|---------------|-----------|-------------|--------|-------|
| case list page               | GET    | /cases/                                      | login | 200           | 200       | 200         | 403    | 200   |
| case list page, filtered     | GET    | /cases/?status=open&confirmed=no&q=PSN       | login | 200           | 200       | 200         | 403    | 200   |
| case detail page             | GET    | /cases/{case}/                               | login | 200           | 200       | 404         | 403    | 200   |
| new case form                | GET    | /cases/new/                                  | login | 200           | 200       | 403         | 403    | 200   |
| create case (+photo)         | POST   | /cases/new/                                  | login | 302           | 302       | 403         | 403    | 302   |
| photo upload (drop zone)     | POST   | /cases/{case}/photos/                        | login | 201           | 201       | 403         | 403    | 201   |
| photo file stream            | GET    | /photos/{photo}/file                         | login | 200           | 200       | 404         | 403    | 200   |
| photo thumbnail stream       | GET    | /photos/{photo}/file?w=32                    | login | 200           | 200       | 404         | 403    | 200   |
| record label (consensus)     | POST   | /cases/{case}/labels/                        | login | 302           | 302       | 403         | 403    | 302   |
| confirm label (histopath.)   | POST   | /cases/{case}/labels/#histo                  | login | 302           | 403       | 403         | 403    | 302   |
| change case status           | POST   | /cases/{case}/status/                        | login | 302           | 302       | 403         | 403    | 302   |
| label report file            | GET    | /cases/{case}/labels/{label}/report          | login | 200           | 200       | 404         | 403    | 200   |
| cases CSV export             | GET    | /cases/export.csv                            | login | 403           | 403       | 403         | 403    | 200   |
| taxonomy page (view)         | GET    | /taxonomy/                                   | login | 200           | 200       | 200         | 200    | 200   |
| taxonomy version page        | GET    | /taxonomy/{taxonomy}/                        | login | 200           | 200       | 200         | 200    | 200   |
| taxonomy JSON export         | GET    | /taxonomy/{taxonomy}/export.json             | login | 200           | 200       | 200         | 200    | 200   |
| taxonomy edit                | POST   | /taxonomy/{taxonomy}/                        | login | 403           | 403       | 403         | 403    | 302   |
| taxonomy import (page)       | POST   | /taxonomy/#import                            | login | 403           | 403       | 403         | 403    | 302   |
| API root                     | GET    | /api/                                        | 403   | 200           | 200       | 200         | 200    | 200   |
| API patients list            | GET    | /api/patients/                               | 403   | 200           | 200       | 200         | 403    | 200   |
| API patient detail           | GET    | /api/patients/{patient}/                     | 403   | 200           | 200       | 404         | 403    | 200   |
| API patient create           | POST   | /api/patients/                               | 403   | 405           | 405       | 403         | 403    | 405   |
| API cases list               | GET    | /api/cases/                                  | 403   | 200           | 200       | 200         | 403    | 200   |
| API cases list, filtered     | GET    | /api/cases/?diagnosis=nv&modality=clinical   | 403   | 200           | 200       | 200         | 403    | 200   |
| API case detail              | GET    | /api/cases/{case}/                           | 403   | 200           | 200       | 404         | 403    | 200   |
| API case label history       | GET    | /api/cases/{case}/history/                   | 403   | 200           | 200       | 404         | 403    | 200   |
| API case create              | POST   | /api/cases/                                  | 403   | 201           | 201       | 403         | 403    | 201   |
| API photos list              | GET    | /api/photos/                                 | 403   | 200           | 200       | 200         | 403    | 200   |
| API photo detail             | GET    | /api/photos/{photo}/                         | 403   | 200           | 200       | 404         | 403    | 200   |
| API photo file               | GET    | /api/photos/{photo}/file/                    | 403   | 200           | 200       | 404         | 403    | 200   |
| API photo upload             | POST   | /api/photos/                                 | 403   | 201           | 201       | 403         | 403    | 201   |
| API labels list              | GET    | /api/labels/                                 | 403   | 200           | 200       | 200         | 403    | 200   |
| API label detail             | GET    | /api/labels/{label}/                         | 403   | 200           | 200       | 404         | 403    | 200   |
| API label create (consensus) | POST   | /api/labels/                                 | 403   | 201           | 201       | 403         | 403    | 201   |
| API label confirm (histo)    | POST   | /api/labels/#histo                           | 403   | 201           | 403       | 403         | 403    | 201   |
| API taxonomies list          | GET    | /api/taxonomies/                             | 403   | 200           | 200       | 200         | 200    | 200   |
| API taxonomy detail          | GET    | /api/taxonomies/{taxonomy}/                  | 403   | 200           | 200       | 200         | 200    | 200   |
| API taxonomy export          | GET    | /api/taxonomies/{taxonomy}/export/           | 403   | 200           | 200       | 200         | 200    | 200   |
| API taxonomy import          | POST   | /api/taxonomies/import/                      | 403   | 403           | 403       | 403         | 403    | 201   |
| OpenAPI schema               | GET    | /api/schema/                                 | 403   | 200           | 200       | 200         | 403    | 200   |
| API docs (Swagger UI)        | GET    | /api/docs/                                   | 403   | 200           | 200       | 200         | 403    | 200   |
| API docs (ReDoc)             | GET    | /api/redoc/                                  | 403   | 200           | 200       | 200         | 403    | 200   |
"""


def _parse(table: str) -> list[dict]:
    lines = [ln.strip() for ln in table.strip().splitlines() if ln.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if set(cells[0]) <= {"-"}:
            continue
        rows.append(dict(zip(header, cells)))
    return rows


ROWS = _parse(MATRIX)


def test_matrix_has_every_role_and_no_reader_sees_clinical_data():
    assert all(set(ROLES) <= set(row) for row in ROWS)
    reader_ok = {row["name"] for row in ROWS if row["reader"].startswith("2")}
    # What a reader may open: the taxonomy (not patient data); not the API description.
    assert reader_ok == {
        "taxonomy page (view)",
        "taxonomy version page",
        "taxonomy JSON export",
        "API root",
        "API taxonomies list",
        "API taxonomy detail",
        "API taxonomy export",
    }
    # Coordinators see confirmed cases only: the world's case has a consensus label alone.
    coordinator_404 = {row["name"] for row in ROWS if row["coordinator"] == "404"}
    assert {"case detail page", "API case detail", "photo file stream", "API photo file"} <= coordinator_404
    assert all(row["anon"] in ("login", "403") for row in ROWS)


# --------------------------------------------------------------------------- world
class World:
    def __init__(self, users):
        self.users = users
        self.taxonomy = services.taxonomy_load_default()
        self.case = CaseFactory(created_by=users["dermatologist"])
        self.patient = self.case.patient
        self.photo = services.photo_attach(
            case=self.case, data=image_bytes("JPEG", size=(64, 48)), filename="p.jpg", run_hooks=False
        )
        self.label = services.label_record(
            case=self.case,
            sub_class=self.sub("nv"),
            source="consensus",
            by=users["dermatologist"],
            report_file=ContentFile(b"%PDF-1.4 report", name="report.pdf"),
        )
        self.meta_name = self.taxonomy.meta_classes.get(code="melanocytic")

    def sub(self, code):
        return SubClass.objects.get(taxonomy=self.taxonomy, code=code)

    def url(self, template: str) -> str:
        url = template.split("#", 1)[0]
        return url.format(
            case=self.case.pk,
            photo=self.photo.pk,
            label=self.label.pk,
            taxonomy=self.taxonomy.pk,
            patient=self.patient.pk,
        )


def _state(w: World) -> dict:
    w.case.refresh_from_db()
    return {
        "cases": Case.objects.count(),
        "photos": Photo.objects.count(),
        "labels": sorted(DiagnosisLabel.objects.values_list("source", "sub_class__code")),
        "status": w.case.status,
        "taxonomies": Taxonomy.objects.count(),
        "mel_name": SubClass.objects.get(taxonomy=w.taxonomy, code="mel").display_name,
    }


def _png(name="new.png", color=(5, 6, 7)):
    return SimpleUploadedFile(name, image_bytes("PNG", color=color))


# name -> (request kwargs builder, expected change of _state when allowed)
WRITES = {
    "create case (+photo)": (
        lambda w: {"data": {"patient_code": "PSN-NEW", "sex": "female", "modality": "clinical", "photos": [_png()]}},
        {"cases": +1, "photos": +1},
    ),
    "photo upload (drop zone)": (
        lambda w: {"data": {"photos": [_png()], "modality": "clinical"}, "HTTP_ACCEPT": "application/json"},
        {"photos": +1},
    ),
    "record label (consensus)": (
        lambda w: {"data": {"sub_class": w.sub("bkl").pk, "source": "consensus", "note": "re-read"}},
        {"labels": [("consensus", "bkl")]},
    ),
    "confirm label (histopath.)": (
        lambda w: {
            "data": {"sub_class": w.sub("mel").pk, "source": "histopathology", "report_text": "melanoma in situ"}
        },
        {"labels": [("consensus", "nv"), ("histopathology", "mel")], "status": "confirmed"},
    ),
    "change case status": (
        lambda w: {"data": {"status": "excluded", "exclusion_reason": "blur"}},
        {"status": "excluded"},
    ),
    "taxonomy edit": (
        lambda w: {
            "data": {
                "action": "edit",
                f"sub-{w.sub('mel').pk}-name": "Melanoma (edited)",
                f"sub-{w.sub('mel').pk}-grade": "3",
            }
        },
        {"mel_name": "Melanoma (edited)"},
    ),
    "taxonomy import (page)": (
        lambda w: {
            "data": {
                "action": "import",
                "name": "tiny",
                "file": SimpleUploadedFile("t.json", b'{"meta_classes": {"a": ["x", "y"]}}'),
            }
        },
        {"taxonomies": +1},
    ),
    "API patient create": (lambda w: {"data": {"code": "PSN-API"}, "content_type": "application/json"}, {}),
    "API case create": (
        lambda w: {"data": {"patient_code": "PSN-API", "body_site": "arm"}, "content_type": "application/json"},
        {"cases": +1},
    ),
    "API photo upload": (lambda w: {"data": {"case": w.case.pk, "file": _png()}}, {"photos": +1}),
    "API label create (consensus)": (
        lambda w: {
            "data": {"case": w.case.pk, "sub_class": "bkl", "source": "consensus"},
            "content_type": "application/json",
        },
        {"labels": [("consensus", "bkl")]},
    ),
    "API label confirm (histo)": (
        lambda w: {
            "data": {"case": w.case.pk, "sub_class": "mel", "source": "histopathology"},
            "content_type": "application/json",
        },
        {"labels": [("consensus", "nv"), ("histopathology", "mel")], "status": "confirmed"},
    ),
    "API taxonomy import": (
        lambda w: {"data": {"name": "tiny", "meta_classes": {"a": ["x", "y"]}}, "content_type": "application/json"},
        {"taxonomies": +1},
    ),
}


def _expected_state(before: dict, change: dict) -> dict:
    after = dict(before)
    for key, value in change.items():
        after[key] = before[key] + value if isinstance(value, int) and not isinstance(value, bool) else value
    return after


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_permission_matrix(row, role, client, users):
    w = World(users)
    if role != "anon":
        client.force_login(users[role])
    expected = row[role]
    url = w.url(row["url"])
    before = _state(w)
    if row["method"] == "GET":
        response = client.get(url)
    else:
        build, change = WRITES[row["name"]]
        response = client.post(url, **build(w))
    if expected == "login":
        assert response.status_code == 302, (row["name"], role, response.status_code)
        assert response["Location"].startswith("/accounts/login/")
    else:
        assert response.status_code == int(expected), (row["name"], role, response.status_code, response.content[:300])
    if row["method"] == "POST":
        after = _state(w)
        if expected.startswith("2") or (expected == "302" and role != "anon"):
            assert after == _expected_state(before, change), (row["name"], role)
        else:
            assert after == before, (row["name"], role)
    if response.status_code == 200 and row["method"] == "GET" and row["name"].endswith("stream"):
        assert response["Cache-Control"].startswith("private")
        assert response["X-Content-Type-Options"] == "nosniff"


# --------------------------------------------------------------------------- beyond the table
@pytest.mark.django_db
def test_reader_listing_pages_show_no_patient_codes(client, users):
    """Belt and braces: even pages a reader may open never carry a patient code."""
    w = World(users)
    client.force_login(users[roles.READER])
    for url in ("/", "/taxonomy/", f"/taxonomy/{w.taxonomy.pk}/export.json", "/api/", "/api/taxonomies/"):
        response = client.get(url, follow=True)  # home may send a reader on to their readings
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert w.patient.code.encode() not in body, url


@pytest.mark.django_db
def test_anonymous_ajax_gets_401_json_not_a_login_page(client, users):
    w = World(users)
    response = client.get(f"/photos/{w.photo.pk}/file", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert response.status_code == 401 and response.json() == {"detail": "Login required."}


@pytest.mark.django_db
def test_no_public_media_url(client, users):
    """Stored files have no public URL: MEDIA_URL is not routed, even for a logged-in admin."""
    w = World(users)
    client.force_login(users[roles.ADMIN])
    assert client.get("/no-public-media/" + w.photo.file.name).status_code == 404
    assert client.get("/media/" + w.photo.file.name).status_code == 404


@pytest.mark.django_db
def test_api_basic_auth_uses_the_same_rules(client, users):
    import base64

    w = World(users)
    token = base64.b64encode(f"{users[roles.READER].username}:pw-test-123".encode()).decode()
    assert client.get("/api/cases/", HTTP_AUTHORIZATION=f"Basic {token}").status_code == 403
    token = base64.b64encode(f"{users[roles.DERMATOLOGIST].username}:pw-test-123".encode()).decode()
    response = client.get(f"/api/cases/{w.case.pk}/", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code == 200 and response.json()["patient"]["code"] == w.patient.code


@pytest.mark.django_db
def test_superuser_counts_as_admin(client, make_user):
    su = make_user(None, is_superuser=True, is_staff=True)
    client.force_login(su)
    assert client.get("/cases/export.csv").status_code == 200


@pytest.mark.django_db
def test_user_without_any_role_sees_no_clinical_data(client, make_user, users):
    w = World(users)
    client.force_login(make_user(None))
    for url in (
        "/cases/",
        f"/cases/{w.case.pk}/",
        f"/photos/{w.photo.pk}/file",
        "/api/cases/",
        "/api/photos/",
        "/api/patients/",
    ):
        assert client.get(url).status_code == 403, url


@pytest.mark.django_db
def test_csv_export_contains_pseudonyms_and_labels_only(client, users):
    w = World(users)
    client.force_login(users[roles.ADMIN])
    response = client.get("/cases/export.csv")
    text = response.content.decode()
    header, first = text.splitlines()[:2]
    assert header.startswith("case_id,external_id,patient_code")
    assert w.patient.code in first and ",nv,consensus,False,1" in first
    assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.django_db
def test_csv_export_neutralises_spreadsheet_formulas(client, users):
    w = World(users)
    w.case.body_site = '=HYPERLINK("http://evil.example","click")'
    w.case.save()
    client.force_login(users[roles.ADMIN])
    import csv

    rows = list(csv.DictReader(io.StringIO(client.get("/cases/export.csv").content.decode())))
    assert rows[0]["body_site"] == "'" + w.case.body_site
