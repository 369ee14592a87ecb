"""HTML pages: case detail, labels and history, status changes, report files, taxonomy
editing — the errors a person can make get a message, never a 500."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation import services
from annotation.models import DiagnosisLabel, SubClass, Taxonomy
from derm_portal import roles


@pytest.fixture
def sub(taxonomy):
    return {s.code: s for s in SubClass.objects.filter(taxonomy=taxonomy)}


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.mark.django_db
def test_label_change_is_kept_in_history_and_shown(client, users, case, sub):
    derm = users[roles.DERMATOLOGIST]
    client.force_login(derm)
    url = f"/cases/{case.pk}/labels/"
    client.post(url, {"sub_class": sub["nv"].pk, "source": "consensus"})
    response = client.post(
        url, {"sub_class": sub["bkl"].pk, "source": "consensus", "note": "second opinion"}, follow=True
    )
    assert "Label recorded: Benign keratosis (Clinical consensus)." in _messages(response)
    html = response.content.decode()
    assert "nv → bkl" in html and "second opinion" in html
    assert "Clinical consensus — not confirmed" in html
    assert DiagnosisLabel.objects.get(case=case).sub_class.code == "bkl"
    assert case.label_changes.count() == 2


@pytest.mark.django_db
def test_annotator_form_does_not_offer_histopathology(client, users, case, taxonomy):
    client.force_login(users[roles.ANNOTATOR])
    html = client.get(f"/cases/{case.pk}/").content.decode()
    assert 'value="histopathology"' not in html and "Only dermatologists and admins" in html
    client.force_login(users[roles.DERMATOLOGIST])
    assert 'value="histopathology"' in client.get(f"/cases/{case.pk}/").content.decode()


@pytest.mark.django_db
def test_pathology_report_file_is_stored_and_downloaded(client, users, case, sub):
    client.force_login(users[roles.DERMATOLOGIST])
    report = SimpleUploadedFile("path-report.pdf", b"%PDF-1.4 histology: melanoma", content_type="application/pdf")
    client.post(
        f"/cases/{case.pk}/labels/", {"sub_class": sub["mel"].pk, "source": "histopathology", "report_file": report}
    )
    label = DiagnosisLabel.objects.get(case=case)
    assert label.confirmed and label.report_file.name.startswith(f"reports/case-{case.pk}/")
    response = client.get(f"/cases/{case.pk}/labels/{label.pk}/report")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"%PDF-1.4 histology: melanoma"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_report_file_of_the_wrong_kind_is_refused(client, users, case, sub):
    client.force_login(users[roles.DERMATOLOGIST])
    page = SimpleUploadedFile("report.html", b"<script>alert(1)</script>", content_type="text/html")
    response = client.post(
        f"/cases/{case.pk}/labels/",
        {"sub_class": sub["mel"].pk, "source": "histopathology", "report_file": page},
        follow=True,
    )
    assert any("report.html: a pathology report must be a PDF" in m for m in _messages(response))
    assert not DiagnosisLabel.objects.exists()


@pytest.mark.django_db
def test_status_rules(client, users, case, sub):
    client.force_login(users[roles.DERMATOLOGIST])
    url = f"/cases/{case.pk}/status/"
    r = client.post(url, {"status": "confirmed"}, follow=True)
    assert any("confirmed only by a histopathology label" in m for m in _messages(r))
    r = client.post(url, {"status": "excluded"}, follow=True)
    assert any("Pick why the case is excluded" in m for m in _messages(r))
    case.refresh_from_db()
    assert case.status == "open"
    r = client.post(url, {"status": "excluded", "exclusion_reason": "exudate", "note": "weeping lesion"}, follow=True)
    case.refresh_from_db()
    assert (case.status, case.exclusion_reason, case.exclusion_note) == ("excluded", "exudate", "weeping lesion")
    assert "Excluded: Too much exudate — weeping lesion" in r.content.decode()
    client.post(url, {"status": "awaiting_pathology"})
    case.refresh_from_db()
    assert (case.status, case.exclusion_reason) == ("awaiting_pathology", "")


@pytest.mark.django_db
def test_taxonomy_edit_by_admin_and_bad_grade_is_a_message(client, users, taxonomy, sub):
    client.force_login(users[roles.ADMIN])
    url = f"/taxonomy/{taxonomy.pk}/"
    r = client.post(
        url,
        {
            "action": "edit",
            f"sub-{sub['nv'].pk}-name": "Naevus",
            f"sub-{sub['nv'].pk}-grade": "1",
            f"sub-{sub['mel'].pk}-name": "Melanoma!",
            f"sub-{sub['mel'].pk}-grade": "high",
        },
        follow=True,
    )
    assert r.status_code == 200
    assert any("Grade of mel must be 1, 2, 3" in m for m in _messages(r))
    assert SubClass.objects.get(pk=sub["nv"].pk).display_name == "Melanocytic naevus"  # all or nothing
    r = client.post(
        url,
        {"action": "edit", f"sub-{sub['vasc'].pk}-name": "Vascular", f"sub-{sub['vasc'].pk}-grade": ""},
        follow=True,
    )
    vasc = SubClass.objects.get(pk=sub["vasc"].pk)
    assert (vasc.display_name, vasc.malignancy_grade) == ("Vascular", None)
    assert "Not a tumour" in r.content.decode()


@pytest.mark.django_db
def test_taxonomy_import_page_reports_bad_json(client, users, taxonomy):
    client.force_login(users[roles.ADMIN])
    r = client.post("/taxonomy/", {"action": "import", "file": SimpleUploadedFile("t.json", b"{not json")}, follow=True)
    assert any("t.json: not valid JSON" in m for m in _messages(r))
    r = client.post(
        "/taxonomy/",
        {"action": "import", "file": SimpleUploadedFile("t.json", b'{"meta_classes": {"a": []}}')},
        follow=True,
    )
    assert any('Meta-class "a" needs a non-empty list' in m for m in _messages(r))
    assert Taxonomy.objects.count() == 1
    r = client.post(
        "/taxonomy/",
        {
            "action": "import",
            "name": "Two",
            "make_default": "on",
            "file": SimpleUploadedFile("t.json", b'{"meta_classes": {"a": ["x"], "b": ["y"]}}'),
        },
        follow=True,
    )
    assert Taxonomy.objects.get(is_default=True).name == "Two"
    assert r.redirect_chain[-1][0].startswith("/taxonomy/")


@pytest.mark.django_db
def test_reader_sees_taxonomy_without_edit_controls(client, users, taxonomy):
    client.force_login(users[roles.READER])
    html = client.get("/taxonomy/").content.decode()
    assert "Melanoma" in html and '<input name="sub-' not in html and "Import a new version" not in html
    nav = html.split("</nav>")[0]
    assert "Cases" not in nav and "New case" not in nav


@pytest.mark.django_db
def test_case_detail_gallery_streams_thumbnails(client, users, case):
    from tests.factories import make_photo

    photo = make_photo(case, size=(400, 300))
    services.label_record(
        case=case,
        sub_class=services.taxonomy_load_default().sub_classes.get(code="nv"),
        source="histopathology",
        by=users[roles.DERMATOLOGIST],
    )  # coordinators: confirmed cases only
    client.force_login(users[roles.COORDINATOR])
    html = client.get(f"/cases/{case.pk}/").content.decode()
    assert f'src="/photos/{photo.pk}/file?w=320"' in html
    assert 'id="dropzone"' not in html  # coordinators do not upload
    thumb = client.get(f"/photos/{photo.pk}/file?w=320")
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(thumb.content)).size == (320, 240)
    services.case_set_status(case=case, status="awaiting_pathology", by=users[roles.DERMATOLOGIST])
    assert "Awaiting pathology" in client.get(f"/cases/{case.pk}/").content.decode()


@pytest.mark.django_db
def test_missing_photo_file_is_404_not_500(client, users, case):
    from tests.factories import make_photo

    photo = make_photo(case, size=(800, 600))
    client.force_login(users[roles.DERMATOLOGIST])
    thumb = client.get(f"/photos/{photo.pk}/file?w=100")
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(thumb.content)).size == (100, 75)
    photo.file.storage.delete(photo.file.name)
    assert client.get(f"/photos/{photo.pk}/file").status_code == 404
    assert client.get(f"/photos/{photo.pk}/file?w=100").status_code == 404


@pytest.mark.django_db
def test_login_page_errors_and_next(client, users, case):
    response = client.get(f"/cases/{case.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next=/cases/{case.pk}/"
    bad = client.post("/accounts/login/", {"username": users[roles.DERMATOLOGIST].username, "password": "wrong"})
    assert bad.status_code == 200 and "didn't match" in bad.content.decode()
    good = client.post(
        "/accounts/login/",
        {"username": users[roles.DERMATOLOGIST].username, "password": "pw-test-123", "next": f"/cases/{case.pk}/"},
    )
    assert good.status_code == 302 and good["Location"] == f"/cases/{case.pk}/"
    # an open redirect to another site is refused
    evil = client.post(
        "/accounts/login/",
        {"username": users[roles.DERMATOLOGIST].username, "password": "pw-test-123", "next": "https://evil.example/"},
    )
    assert evil["Location"] == "/"


@pytest.mark.django_db
def test_taxonomy_import_help_is_text_not_markup(client, users, taxonomy):
    client.force_login(users[roles.ADMIN])
    html = client.get("/taxonomy/").content.decode()
    assert '{"meta_classes": {"melanocytic": ["nv", "mel"]}' in html
    assert "<meta>" not in html and "<sub>" not in html  # help_text is rendered unescaped by Django
