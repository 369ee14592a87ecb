"""Upload from a phone: links (hashed, expiring, photo-limited, revocable, bound to one
case), the public mobile page, the desk endpoints and who may use them."""

import hashlib
import os
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotation.models import PhoneUploadToken, Photo
from annotation.phone import services
from derm_portal import roles
from tests.conftest import need
from tests.factories import CaseFactory, PatientFactory, image_bytes

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def desk(users):
    return users[roles.DERMATOLOGIST]


@pytest.fixture
def link(case, desk):
    return services.phone_token_create(case=case, created_by=desk)


def photo_file(name="phone.jpg", color=(200, 100, 90), fmt="JPEG", size=(80, 60)):
    return SimpleUploadedFile(name, image_bytes(fmt, size, color), content_type="image/jpeg")


def url(raw):
    return reverse("annotation:phone_upload", args=[raw])


def media_files(settings):
    root = settings.MEDIA_ROOT
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if "photos" in d)


# --------------------------------------------------------------------------- tokens
def test_token_is_random_and_only_its_hash_is_stored(link, case, desk):
    other = services.phone_token_create(case=case, created_by=desk)
    assert link.raw != other.raw and len(link.raw) >= 40
    row = PhoneUploadToken.objects.get(pk=link.token.pk)
    assert row.token_hash == hashlib.sha256(link.raw.encode()).hexdigest()
    stored = [
        str(v)
        for v in PhoneUploadToken.objects.values_list(*[f.attname for f in PhoneUploadToken._meta.fields]).get(
            pk=row.pk
        )
    ]
    assert all(link.raw not in v for v in stored)
    # the hash itself is not a working link
    assert Client().get(url(row.token_hash)).status_code == 404


def test_defaults_come_from_settings(case, desk, settings):
    settings.DERM_PHONE_TOKEN_TTL_MINUTES = 5
    settings.DERM_PHONE_TOKEN_MAX_PHOTOS = 3
    issued = services.phone_token_create(case=case, created_by=desk)
    left = issued.token.expires_at - timezone.now()
    assert timedelta(minutes=4, seconds=50) < left <= timedelta(minutes=5)
    assert issued.token.max_photos == 3


def test_only_roles_that_add_photos_may_issue_links(case, users):
    for role in roles.ALL_ROLES:
        if role in roles.CAN_EDIT_CASES:
            assert services.phone_token_create(case=case, created_by=users[role]).token.case == case
        else:
            with pytest.raises(services.PermissionDenied):
                services.phone_token_create(case=case, created_by=users[role])


# --------------------------------------------------------------------------- mobile page
def test_mobile_page_shows_case_reference_and_no_clinical_data(db, desk):
    patient = PatientFactory(code="PSN-SECRET-77", birth_year=1961)
    case = CaseFactory(
        patient=patient, body_site="left-scapula-zz", clinical_history="itchy since spring qq", age_at_visit=63
    )
    issued = services.phone_token_create(case=case, created_by=desk)
    resp = Client().get(url(issued.raw))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert case.reference in html
    for secret in ("PSN-SECRET-77", "left-scapula-zz", "itchy since spring qq", "1961", desk.username):
        assert secret not in html
    assert 'capture="environment"' in html and 'accept="image/*"' in html and "multiple" in html
    assert resp["Referrer-Policy"] == "no-referrer"
    assert "no-store" in resp["Cache-Control"]


def test_phone_upload_lands_in_the_case_and_counts(link, case, desk):
    resp = Client().post(url(link.raw), {"photos": photo_file(), "modality": "dermoscopic"}, **JSON)
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert [p["name"] for p in body["stored"]] == ["phone.jpg"]
    assert body["remaining"] == 9 and body["state"] == "active"
    photo = Photo.objects.get(case=case)
    assert photo.modality == "dermoscopic" and photo.uploaded_by == desk
    link.token.refresh_from_db()
    assert link.token.photos_uploaded == 1 and link.token.last_used_at is not None


def test_phone_photos_run_the_photo_hooks(link, settings, django_capture_on_commit_callbacks):
    seen.clear()
    settings.DERM_PHOTO_ATTACHED_HOOKS = ["tests.annotation.test_phone_upload.record_hook"]
    with django_capture_on_commit_callbacks(execute=True):
        resp = Client().post(url(link.raw), {"photos": photo_file()}, **JSON)
    assert resp.status_code == 201
    assert seen == [resp.json()["stored"][0]["id"]]


seen: list[int] = []


def record_hook(*, photo_pk):
    seen.append(photo_pk)


def test_page_without_javascript_posts_and_lists_results(link, case):
    client = Client()
    resp = client.post(url(link.raw), {"photos": [photo_file("a.jpg"), SimpleUploadedFile("b.jpg", b"not an image")]})
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "a.jpg added" in html
    assert "b.jpg: this is not an image" in html
    assert case.photos.count() == 1


def test_expired_link_is_refused_with_410_and_clear_message(link, case):
    PhoneUploadToken.objects.filter(pk=link.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client = Client()
    page = client.get(url(link.raw))
    assert page.status_code == 410
    assert "This upload link has expired" in page.content.decode()
    post = client.post(url(link.raw), {"photos": photo_file()}, **JSON)
    assert post.status_code == 410 and post.json()["state"] == "expired"
    assert not case.photos.exists()


def test_link_expires_by_the_clock(case, desk):
    issued = services.phone_token_create(case=case, created_by=desk, ttl=timedelta(minutes=15))
    assert services.phone_token_state(token=issued.token) == "active"
    later = timezone.now() + timedelta(minutes=15, seconds=1)
    assert services.phone_token_state(token=issued.token, now=later) == "expired"


def test_photo_limit_cannot_be_exceeded(case, desk):
    issued = services.phone_token_create(case=case, created_by=desk, max_photos=2)
    client = Client()
    resp = client.post(
        url(issued.raw),
        {
            "photos": [
                photo_file("1.jpg", (10, 20, 30)),
                photo_file("2.jpg", (40, 50, 60)),
                photo_file("3.jpg", (70, 80, 90)),
            ]
        },
        **JSON,
    )
    assert resp.status_code == 201
    body = resp.json()
    assert [p["name"] for p in body["stored"]] == ["1.jpg", "2.jpg"]
    assert body["errors"] == [
        {"file": "3.jpg", "error": "3.jpg: not stored, this link's limit of 2 photos is reached."}
    ]
    assert body["remaining"] == 0 and body["state"] == "used_up"
    assert case.photos.count() == 2
    # reuse after the limit: the page and the upload say so with 410
    page = client.get(url(issued.raw))
    assert page.status_code == 410 and "maximum number of photos" in page.content.decode()
    again = client.post(url(issued.raw), {"photos": photo_file("4.jpg", (1, 2, 3))}, **JSON)
    assert again.status_code == 410 and again.json()["state"] == "used_up"
    assert case.photos.count() == 2


def test_rejected_files_do_not_use_up_the_link(case, desk):
    issued = services.phone_token_create(case=case, created_by=desk, max_photos=1)
    client = Client()
    bad = client.post(url(issued.raw), {"photos": SimpleUploadedFile("x.jpg", b"\xff\xd8\xff garbage")}, **JSON)
    assert bad.status_code == 400
    good = client.post(url(issued.raw), {"photos": photo_file()}, **JSON)
    assert good.status_code == 201 and good.json()["state"] == "used_up"
    issued.token.refresh_from_db()
    assert (issued.token.photos_uploaded, issued.token.files_rejected) == (1, 1)


def test_revoked_link_is_refused(link, case, desk):
    client = Client()
    client.force_login(desk)
    resp = client.post(reverse("annotation:phone_token_revoke", args=[case.pk, link.token.pk]), **JSON)
    assert resp.status_code == 200 and resp.json()["token"]["state"] == "revoked"
    phone = Client()
    page = phone.get(url(link.raw))
    assert page.status_code == 410 and "cancelled at the desk" in page.content.decode()
    post = phone.post(url(link.raw), {"photos": photo_file()}, **JSON)
    assert post.status_code == 410 and post.json()["state"] == "revoked"
    assert not case.photos.exists()


def test_unknown_link_is_404_with_message(db):
    resp = Client().get(url("no-such-token-at-all"))
    assert resp.status_code == 404
    assert "This upload link is not valid" in resp.content.decode()
    post = Client().post(url("no-such-token-at-all"), {"photos": photo_file()}, **JSON)
    assert post.status_code == 404 and post.json()["state"] == "unknown"
    assert not Photo.objects.exists()


def test_link_for_one_case_never_uploads_to_another(link, case, desk):
    other = CaseFactory()
    resp = Client().post(url(link.raw), {"photos": photo_file(), "case": other.pk, "case_id": other.pk}, **JSON)
    assert resp.status_code == 201
    assert case.photos.count() == 1 and other.photos.count() == 0
    # and a link can't be revoked or polled through another case's URL
    client = Client()
    client.force_login(desk)
    assert client.post(reverse("annotation:phone_token_revoke", args=[other.pk, link.token.pk])).status_code == 404
    poll = client.get(reverse("annotation:case_photos_json", args=[other.pk]) + f"?token={link.token.pk}")
    assert poll.json()["token"] is None and poll.json()["photos"] == []


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("evil.jpg", b"<?php system($_GET['c']); ?>", "not an image"),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
        ("anim.gif", image_bytes("GIF"), "GIF images are not accepted"),
        ("cut.jpg", image_bytes("JPEG", (400, 300))[:600], "truncated or corrupt"),
        ("empty.jpg", b"", "the file is empty"),
    ],
)
def test_hostile_file_is_rejected_clearly_and_leaves_nothing(link, case, settings, name, data, reason):
    before = media_files(settings)
    resp = Client().post(url(link.raw), {"photos": SimpleUploadedFile(name, data)}, **JSON)
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert len(errors) == 1 and errors[0]["file"] == name and reason in errors[0]["error"]
    assert not Photo.objects.exists()
    assert media_files(settings) == before
    link.token.refresh_from_db()
    assert link.token.photos_uploaded == 0 and link.token.files_rejected == 1


def test_oversized_file_is_rejected(link, settings):
    settings.DERM_MAX_UPLOAD_BYTES = 1000
    resp = Client().post(url(link.raw), {"photos": photo_file(size=(400, 400))}, **JSON)
    assert resp.status_code == 400 and "the limit is" in resp.json()["errors"][0]["error"]
    assert not Photo.objects.exists()


def test_duplicate_photo_is_reported(link, case):
    client = Client()
    assert client.post(url(link.raw), {"photos": photo_file()}, **JSON).status_code == 201
    resp = client.post(url(link.raw), {"photos": photo_file("again.jpg")}, **JSON)
    assert resp.status_code == 400 and "already in the case" in resp.json()["errors"][0]["error"]
    assert case.photos.count() == 1


def test_empty_post_asks_for_a_photo(link):
    resp = Client().post(url(link.raw), {}, **JSON)
    assert resp.status_code == 400 and "No photo was sent" in resp.json()["errors"][0]["error"]


def test_mobile_form_needs_the_csrf_token_of_the_page(link, case):
    phone = Client(enforce_csrf_checks=True)
    refused = phone.post(url(link.raw), {"photos": photo_file()})
    assert refused.status_code == 403 and not case.photos.exists()
    page = phone.get(url(link.raw))
    token = page.context["csrf_token"]
    ok = phone.post(url(link.raw), {"photos": photo_file(), "csrfmiddlewaretoken": str(token)}, **JSON)
    assert ok.status_code == 201 and case.photos.count() == 1


def test_public_page_is_rate_limited(link, settings, monkeypatch):
    settings.DERM_PHONE_UPLOAD_RATE_PER_MINUTE = 3
    # the limits count per clock minute: hold the clock so a minute turning mid-test cannot reset them
    now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: now)
    phone = Client()
    codes = [phone.get(url(link.raw)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert phone.post(url(link.raw), {"photos": photo_file()}, **JSON).status_code == 429
    # over all links, one address gets five times the per-link limit
    codes = [phone.get(url(f"guess-{i}")).status_code for i in range(12)]
    assert codes[:10] == [404] * 10 and codes[10:] == [429, 429]


# --------------------------------------------------------------------------- desk
@pytest.mark.parametrize("role", roles.ALL_ROLES)
def test_qr_panel_and_link_creation_per_role(role, users, case):
    from annotation import services

    services.label_record(
        case=case,
        sub_class=services.taxonomy_load_default().sub_classes.get(code="nv"),
        source="histopathology",
        by=users[roles.DERMATOLOGIST],
    )  # coordinators: confirmed cases only
    client = Client()
    client.force_login(users[role])
    page = client.get(reverse("annotation:case_detail", args=[case.pk]))
    create = client.post(reverse("annotation:phone_token_create", args=[case.pk]), **JSON)
    if role in (roles.DERMATOLOGIST, roles.ANNOTATOR, roles.ADMIN):
        assert page.status_code == 200 and "Upload from phone" in page.content.decode()
        assert create.status_code == 201
        assert PhoneUploadToken.objects.filter(case=case, created_by=users[role]).count() == 1
    elif role == roles.COORDINATOR:  # sees the case, may not add photos
        assert page.status_code == 200 and "Upload from phone" not in page.content.decode()
        assert create.status_code == 403
    else:  # reader: no clinical data at all
        assert page.status_code == 403 and create.status_code == 403
    if role not in (roles.DERMATOLOGIST, roles.ANNOTATOR, roles.ADMIN):
        assert not PhoneUploadToken.objects.exists()


def test_anonymous_desk_endpoints_need_login(case):
    client = Client()
    assert client.post(reverse("annotation:phone_token_create", args=[case.pk])).status_code == 302
    assert (
        client.get(
            reverse("annotation:case_photos_json", args=[case.pk]), HTTP_X_REQUESTED_WITH="XMLHttpRequest"
        ).status_code
        == 401
    )
    assert not PhoneUploadToken.objects.exists()


def test_create_returns_qr_svg_of_the_desk_host(case, desk, settings):
    settings.ALLOWED_HOSTS = ["desk.clinic.test"]
    client = Client()
    client.force_login(desk)
    resp = client.post(
        reverse("annotation:phone_token_create", args=[case.pk]), HTTP_HOST="desk.clinic.test:8443", **JSON
    )
    assert resp.status_code == 201
    body = resp.json()
    assert body["url"].startswith("http://desk.clinic.test:8443/m/upload/")
    raw = body["url"].rstrip("/").rsplit("/", 1)[-1]
    assert PhoneUploadToken.objects.get(token_hash=hashlib.sha256(raw.encode()).hexdigest()).case == case
    assert body["svg"].startswith("<svg") and "</svg>" in body["svg"]
    assert body["token"]["max_photos"] == 10 and body["token"]["state"] == "active"
    assert 890 <= body["token"]["seconds_left"] <= 900


def test_public_base_url_setting_overrides_the_host(case, desk, settings):
    settings.DERM_PUBLIC_BASE_URL = "https://derm.hospital.lan/"
    client = Client()
    client.force_login(desk)
    body = client.post(reverse("annotation:phone_token_create", args=[case.pk]), **JSON).json()
    assert body["url"].startswith("https://derm.hospital.lan/m/upload/")


def test_create_without_javascript_shows_the_code_page(case, desk):
    client = Client()
    client.force_login(desk)
    resp = client.post(reverse("annotation:phone_token_create", args=[case.pk]))
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "<svg" in html and "/m/upload/" in html and case.reference in html


def test_photos_json_lists_new_photos_and_link_state(link, case, desk):
    client = Client()
    client.force_login(desk)
    poll_url = reverse("annotation:case_photos_json", args=[case.pk])
    assert client.get(poll_url).json()["photos"] == []
    Client().post(url(link.raw), {"photos": [photo_file("a.jpg", (1, 1, 1)), photo_file("b.jpg", (2, 2, 2))]}, **JSON)
    body = client.get(f"{poll_url}?token={link.token.pk}").json()
    ids = [p["id"] for p in body["photos"]]
    assert len(ids) == 2 and body["photos"][0]["url"] == reverse("annotation:photo_file", args=[ids[0]])
    assert body["token"]["photos_uploaded"] == 2 and body["token"]["remaining"] == 8
    assert [p["id"] for p in client.get(f"{poll_url}?after={ids[0]}").json()["photos"]] == [ids[1]]


@pytest.mark.parametrize("role", roles.ALL_ROLES)
def test_photos_json_per_role(role, users, case):
    client = Client()
    client.force_login(users[role])
    resp = client.get(reverse("annotation:case_photos_json", args=[case.pk]))
    if role == roles.COORDINATOR:  # coordinators see histopathology-confirmed cases only; this one is not
        assert resp.status_code == 404
    else:
        assert resp.status_code == (200 if role in roles.CAN_VIEW_CLINICAL else 403)


def test_active_links_are_listed_on_the_case_page_and_can_be_cancelled(link, case, desk):
    client = Client()
    client.force_login(desk)
    html = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
    assert "1 phone link still open" in html
    resp = client.post(reverse("annotation:phone_token_revoke", args=[case.pk, link.token.pk]))
    assert resp.status_code == 302
    assert "phone link still open" not in client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
    assert Client().get(url(link.raw)).status_code == 410


@pytest.mark.django_db(transaction=True)
def test_two_phones_at_once_cannot_exceed_the_limit(users, monkeypatch):
    """The token row is locked for the whole upload (SELECT ... FOR UPDATE): two
    simultaneous uploads on a one-photo link store exactly one photo."""
    import threading
    import time

    from django.db import connection

    need(connection.vendor == "postgresql", "row locks need PostgreSQL (set DATABASE_URL)")
    case = CaseFactory()
    issued = services.phone_token_create(case=case, created_by=users[roles.ANNOTATOR], max_photos=1)
    real_attach = services.photo_attach

    def slow_attach(**kwargs):  # widen the race window inside the locked section
        time.sleep(0.4)
        return real_attach(**kwargs)

    monkeypatch.setattr(services, "photo_attach", slow_attach)
    barrier = threading.Barrier(2)
    outcomes = []

    def upload(color):
        from django.db import connection as conn

        try:
            barrier.wait()
            result = services.phone_upload(raw=issued.raw, uploads=[photo_file(f"{color}.jpg", color)])
            outcomes.append(("stored", len(result.photos)))
        except services.PhoneLinkError as exc:
            outcomes.append(("refused", exc.state))
        finally:
            conn.close()

    threads = [threading.Thread(target=upload, args=(c,)) for c in ((10, 10, 10), (200, 200, 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == [("refused", "used_up"), ("stored", 1)]
    assert case.photos.count() == 1
    assert PhoneUploadToken.objects.get(pk=issued.token.pk).photos_uploaded == 1
