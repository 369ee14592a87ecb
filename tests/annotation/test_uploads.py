"""Uploads: the hostile corpus is refused one file at a time with a clear error naming
the file, through the service, the HTML upload endpoint and the API, and leaves no row
and no file behind. Good photos are converted (orientation, colour) and stripped."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from annotation import services
from annotation.images import ImageRejected, clean_image
from annotation.models import Case, Photo
from derm_portal import roles
from tests.annotation.hostile.make_corpus import REJECTED, load, sanitised_files
from tests.factories import CaseFactory, image_bytes

HOSTILE = sorted(REJECTED)


def media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def stored_image(photo: Photo) -> Image.Image:
    with photo.file.open("rb") as fh:
        img = Image.open(io.BytesIO(fh.read()))
        img.load()
    return img


def stored_bytes(photo: Photo) -> bytes:
    with photo.file.open("rb") as fh:
        return fh.read()


@pytest.fixture
def derm(users):
    return users[roles.DERMATOLOGIST]


@pytest.fixture
def derm_client(client, derm):
    client.force_login(derm)
    return client


def test_corpus_files_are_present_and_small():
    folder = Path(__file__).parent / "hostile"
    committed = [n for n in REJECTED if (folder / n).exists()]
    assert len(committed) == len(REJECTED) - 1  # the 26 MB file is generated at test time
    assert all((folder / n).stat().st_size < 10_000 for n in committed)
    assert len(load("oversize_26mb.jpg")) > settings.DERM_MAX_UPLOAD_BYTES


# ------------------------------------------------------------------ one by one, three ways
@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE)
def test_service_rejects_hostile_file(name, case):
    before = media_files()
    with pytest.raises(ImageRejected) as info:
        services.photo_attach(case=case, data=load(name), filename=name, run_hooks=False)
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert REJECTED[name].lower() in message.lower()
    assert not Photo.objects.exists()
    assert media_files() == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE)
def test_html_upload_endpoint_rejects_hostile_file(name, case, derm_client):
    before = media_files()
    response = derm_client.post(
        reverse("annotation:photo_upload", args=[case.pk]),
        {"photos": SimpleUploadedFile(name, load(name)), "modality": "clinical"},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["stored"] == []
    assert [e["file"] for e in body["errors"]] == [name]
    assert body["errors"][0]["error"].startswith(f"{name}: ")
    assert REJECTED[name].lower() in body["errors"][0]["error"].lower()
    assert not Photo.objects.exists()
    assert media_files() == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", HOSTILE)
def test_api_rejects_hostile_file(name, case, derm_client):
    before = media_files()
    response = derm_client.post(
        "/api/photos/", {"case": case.pk, "file": SimpleUploadedFile(name, load(name)), "modality": "clinical"}
    )
    assert response.status_code == 400, response.content[:300]
    errors = response.json()["file"]
    assert len(errors) == 1
    # An empty upload is refused by DRF's FileField before our decoder sees it.
    if name == "empty.jpg":
        assert "empty" in errors[0].lower()
    else:
        assert errors[0].startswith(f"{name}: ") and REJECTED[name].lower() in errors[0].lower()
    assert not Photo.objects.exists()
    assert media_files() == before


@pytest.mark.django_db
def test_new_case_form_with_only_hostile_photos_creates_nothing(derm_client, taxonomy):
    before = media_files()
    response = derm_client.post(
        reverse("annotation:case_create"),
        {
            "patient_code": "PSN-HOSTILE",
            "sex": "female",
            "modality": "clinical",
            "photos": [SimpleUploadedFile(n, load(n)) for n in ("truncated.jpg", "vector.svg", "bomb_100mp.png")],
        },
    )
    assert response.status_code == 200  # the form again, with the reasons
    text = response.content.decode()
    for name in ("truncated.jpg", "vector.svg", "bomb_100mp.png"):
        assert name in text
    assert not Case.objects.exists() and not Photo.objects.exists()
    assert media_files() == before


# ------------------------------------------------------------------ batches
@pytest.mark.django_db
def test_batch_stores_good_files_and_reports_bad_ones(case, derm):
    before = len(media_files())
    uploads = [
        SimpleUploadedFile("good-1.jpg", image_bytes("JPEG", color=(10, 200, 30))),
        SimpleUploadedFile("truncated.jpg", load("truncated.jpg")),
        SimpleUploadedFile("good-2.png", image_bytes("PNG", color=(200, 10, 30))),
        SimpleUploadedFile("animation.gif", load("animation.gif")),
        SimpleUploadedFile("good-1-again.jpg", image_bytes("JPEG", color=(10, 200, 30))),
        SimpleUploadedFile("oversize_26mb.jpg", load("oversize_26mb.jpg")),
    ]
    result = services.photos_attach_batch(case=case, uploads=uploads, uploaded_by=derm)
    assert [p.original_name for p in result.photos] == ["good-1.jpg", "good-2.png"]
    assert [e["file"] for e in result.errors] == [
        "truncated.jpg",
        "animation.gif",
        "good-1-again.jpg",
        "oversize_26mb.jpg",
    ]
    assert "already in the case" in result.errors[2]["error"]
    assert case.photos.count() == 2
    assert len(media_files()) == before + 2


@pytest.mark.django_db
def test_html_batch_reports_per_file(case, derm_client):
    response = derm_client.post(
        reverse("annotation:photo_upload", args=[case.pk]),
        {
            "photos": [
                SimpleUploadedFile("ok.jpg", image_bytes("JPEG")),
                SimpleUploadedFile("page_renamed.jpg", load("page_renamed.jpg")),
            ],
            "modality": "dermoscopic",
        },
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    assert [p["name"] for p in body["stored"]] == ["ok.jpg"]
    assert [e["file"] for e in body["errors"]] == ["page_renamed.jpg"]
    assert case.photos.get().modality == "dermoscopic"


@pytest.mark.django_db
def test_new_case_form_keeps_good_photos_and_reports_bad(derm_client, taxonomy):
    response = derm_client.post(
        reverse("annotation:case_create"),
        {
            "patient_code": "PSN-MIXED",
            "sex": "male",
            "modality": "clinical",
            "photos": [
                SimpleUploadedFile("a.jpg", image_bytes("JPEG")),
                SimpleUploadedFile("scan.tiff", load("scan.tiff")),
            ],
        },
        follow=True,
    )
    case = Case.objects.get(patient__code="PSN-MIXED")
    assert response.redirect_chain[-1][0] == reverse("annotation:case_detail", args=[case.pk])
    assert case.photos.count() == 1
    text = response.content.decode()
    assert "scan.tiff: TIFF images are not accepted" in text


@pytest.mark.django_db
def test_storage_failure_leaves_no_row(case, monkeypatch):
    """A crash while saving the row removes the file already written."""
    before = media_files()

    def boom(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Photo, "save", boom)
    with pytest.raises(RuntimeError):
        services.photo_attach(case=case, data=image_bytes("JPEG"), filename="x.jpg", run_hooks=False)
    monkeypatch.undo()
    assert not Photo.objects.exists()
    assert media_files() == before


# ------------------------------------------------------------------ sanitised, not rejected
@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(sanitised_files()))
def test_polyglot_photo_is_stored_without_its_payload(name, case):
    content, payload = sanitised_files()[name]
    assert payload in content
    photo = services.photo_attach(case=case, data=content, filename=name, run_hooks=False)
    data = stored_bytes(photo)
    assert payload not in data
    assert data.startswith(b"\xff\xd8\xff") and data.rstrip(b"\0").endswith(b"\xff\xd9")


@pytest.mark.django_db
def test_extension_lies_are_ignored_content_decides(case):
    photo = services.photo_attach(case=case, data=image_bytes("PNG"), filename="really-a-png.jpg", run_hooks=False)
    assert photo.file.name.endswith(".png")
    assert stored_bytes(photo).startswith(b"\x89PNG")


# ------------------------------------------------------------------ conversions
def _exif_with_orientation_and_gps(orientation=6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.0)}  # GPSInfo IFD
    return exif.tobytes()


def _left_red_right_blue(size=(80, 40)) -> Image.Image:
    img = Image.new("RGB", size, (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return img


@pytest.mark.django_db
def test_exif_orientation_applied_then_exif_and_gps_stripped(case):
    out = io.BytesIO()
    _left_red_right_blue((80, 40)).save(out, "JPEG", quality=95, exif=_exif_with_orientation_and_gps(6))
    raw = out.getvalue()
    original = Image.open(io.BytesIO(raw))
    assert original.getexif().get_ifd(0x8825)[1] == "N"  # the test file really carries GPS

    photo = services.photo_attach(case=case, data=raw, filename="phone.jpg", run_hooks=False)
    assert (photo.width, photo.height) == (40, 80)  # orientation 6: rotated 90 degrees
    img = stored_image(photo)
    assert img.size == (40, 80)
    # Orientation 6 = rotate 90 CW to display: the stored left (red) half ends on top.
    top, bottom = img.getpixel((20, 10)), img.getpixel((20, 70))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert "exif" not in img.info and len(img.getexif()) == 0
    data = stored_bytes(photo)
    assert b"Exif" not in data and b"PhoneMaker" not in data


@pytest.mark.django_db
def test_png_text_chunks_and_exif_are_dropped(case):
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "Patient Jane Doe, 12 Home Street")
    out = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(out, "PNG", pnginfo=meta, exif=_exif_with_orientation_and_gps(1))
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="meta.png", run_hooks=False)
    data = stored_bytes(photo)
    assert b"Jane Doe" not in data and b"eXIf" not in data and b"tEXt" not in data


@pytest.mark.django_db
def test_cmyk_jpeg_becomes_correct_rgb(case):
    out = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(out, "JPEG", quality=95)  # pure red in CMYK
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="press.jpg", run_hooks=False)
    img = stored_image(photo)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((16, 16))
    assert r > 240 and g < 15 and b < 15, (r, g, b)


@pytest.mark.django_db
def test_sixteen_bit_grey_png_scales_to_eight_bit(case):
    img16 = Image.new("I;16", (4, 3), 0)
    for x, value in enumerate((0, 32896, 65535, 16448)):
        for y in range(3):
            img16.putpixel((x, y), value)
    out = io.BytesIO()
    img16.save(out, "PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="scan16.png", run_hooks=False)
    img = stored_image(photo)
    assert img.mode == "RGB"
    assert [img.getpixel((x, 1)) for x in range(4)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255), (64, 64, 64)]


def _png16_rgb(width, height, rgb16) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" + struct.pack(">HHH", *rgb16) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")
    )


@pytest.mark.django_db
def test_sixteen_bit_colour_png_keeps_its_colour(case):
    data = _png16_rgb(6, 4, (65535, 32896, 0))
    photo = services.photo_attach(case=case, data=data, filename="rgb48.png", run_hooks=False)
    assert stored_image(photo).getpixel((2, 2)) == (255, 128, 0)


@pytest.mark.django_db
def test_palette_with_transparency_is_composited_on_white(case):
    img = Image.new("P", (20, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.paste(1, (10, 0, 20, 10))  # right half: palette index 1 (red); left: index 0 (transparent black)
    out = io.BytesIO()
    img.save(out, "PNG", transparency=0)
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="palette.png", run_hooks=False)
    stored = stored_image(photo)
    assert stored.mode == "RGB"
    assert stored.getpixel((3, 5)) == (255, 255, 255)  # transparent -> white, not black
    assert stored.getpixel((15, 5)) == (255, 0, 0)


@pytest.mark.django_db
def test_rgba_is_composited_on_white(case):
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 128))
    img.paste((0, 0, 255, 0), (0, 0, 5, 10))
    out = io.BytesIO()
    img.save(out, "PNG")
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="alpha.png", run_hooks=False)
    stored = stored_image(photo)
    assert stored.getpixel((2, 2)) == (255, 255, 255)  # fully transparent blue -> white
    r, g, b = stored.getpixel((7, 2))
    assert r == 255 and 125 <= g <= 129 and 125 <= b <= 129  # half red over white


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_webp_is_accepted(case, mode):
    out = io.BytesIO()
    Image.new(mode, (40, 30), (30, 160, 90) + ((255,) if mode == "RGBA" else ())).save(out, "WEBP", lossless=True)
    photo = services.photo_attach(case=case, data=out.getvalue(), filename=f"x-{mode}.webp", run_hooks=False)
    assert (photo.width, photo.height) == (40, 30)
    assert stored_image(photo).getpixel((5, 5)) == (30, 160, 90)


@pytest.mark.django_db
def test_heic_from_an_iphone_is_accepted(case):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    exif = _exif_with_orientation_and_gps(6)
    _left_red_right_blue((64, 32)).save(out, "HEIF", quality=95, exif=exif)
    data = out.getvalue()
    assert data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")
    photo = services.photo_attach(case=case, data=data, filename="IMG_0001.HEIC", run_hooks=False)
    assert photo.file.name.endswith(".jpg")
    img = stored_image(photo)
    assert img.format == "JPEG" and len(img.getexif()) == 0
    # HEIF stores orientation in the container; either way the photo is upright and GPS-free.
    assert b"Exif" not in stored_bytes(photo)
    assert {img.size, (photo.width, photo.height)} <= {(32, 64), (64, 32)}


# ------------------------------------------------------------------ duplicates
@pytest.mark.django_db
def test_duplicate_in_same_case_is_reported_not_stored(case):
    data = image_bytes("JPEG", color=(1, 2, 3))
    first = services.photo_attach(case=case, data=data, filename="a.jpg", run_hooks=False)
    files = len(media_files())
    with pytest.raises(services.DuplicatePhoto) as info:
        services.photo_attach(case=case, data=data, filename="a-copy.jpg", run_hooks=False)
    assert "a-copy.jpg" in str(info.value) and f"photo {first.pk}" in str(info.value)
    assert case.photos.count() == 1
    assert len(media_files()) == files


@pytest.mark.django_db
def test_duplicate_through_api_is_409(case, derm_client):
    data = image_bytes("JPEG", color=(4, 5, 6))
    assert (
        derm_client.post("/api/photos/", {"case": case.pk, "file": SimpleUploadedFile("a.jpg", data)}).status_code
        == 201
    )
    response = derm_client.post("/api/photos/", {"case": case.pk, "file": SimpleUploadedFile("b.jpg", data)})
    assert response.status_code == 409
    assert "already in the case" in response.json()["file"][0]
    assert case.photos.count() == 1


@pytest.mark.django_db
def test_same_photo_in_another_case_is_allowed(case):
    other = CaseFactory()
    data = image_bytes("JPEG", color=(7, 8, 9))
    a = services.photo_attach(case=case, data=data, filename="a.jpg", run_hooks=False)
    b = services.photo_attach(case=other, data=data, filename="a.jpg", run_hooks=False)
    assert a.sha256 == b.sha256 and a.pk != b.pk
    assert stored_bytes(a) == stored_bytes(b)


def test_clean_image_is_deterministic_so_duplicates_are_found():
    data = image_bytes("JPEG", color=(9, 9, 9))
    assert clean_image(data, "a.jpg").sha256 == clean_image(data, "b.jpg").sha256


# ------------------------------------------------------------------ names and races
@pytest.mark.django_db
def test_hostile_file_names_never_reach_the_path_or_the_page(case, derm_client):
    evil = "../../<img src=x onerror=alert(1)>.jpg"
    response = derm_client.post(
        reverse("annotation:photo_upload", args=[case.pk]),
        {
            "photos": [
                SimpleUploadedFile(evil, load("truncated.jpg")),
                SimpleUploadedFile("../../ok.jpg", image_bytes("JPEG")),
            ]
        },
        follow=True,
    )
    html = response.content.decode()
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror=alert(1)&gt;.jpg" in html
    photo = case.photos.get()
    import re

    # content-addressed (the storage may add a suffix when the same bytes are stored twice)
    assert re.fullmatch(rf"photos/{photo.sha256[:2]}/{photo.sha256}(_\w+)?\.jpg", photo.file.name), photo.file.name
    assert ".." not in photo.file.name
    assert Path(photo.file.path).resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve())


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_uploads_of_one_photo_store_it_once(case, monkeypatch):
    """Whatever the interleaving, one row and one file survive and the other upload is
    reported as a duplicate (the unique constraint backs the early check)."""
    import threading

    from django.db import connection, connections

    from tests.conftest import need

    need(connection.vendor == "postgresql", "concurrent writers need PostgreSQL (SQLite serialises them)")
    from annotation import cases

    real_content_file = cases.ContentFile
    barrier = threading.Barrier(2, timeout=30)

    def after_the_check(content, *args, **kwargs):
        barrier.wait()  # both uploads have passed the "already in the case?" check
        return real_content_file(content, *args, **kwargs)

    monkeypatch.setattr(cases, "ContentFile", after_the_check)
    deleted = []
    real_delete = cases.stored_file_delete
    monkeypatch.setattr(cases, "stored_file_delete", lambda name, **kw: deleted.append(name) or real_delete(name, **kw))
    before = media_files()
    data = image_bytes("JPEG", color=(77, 66, 55))
    outcomes = []

    def upload(name):
        try:
            services.photo_attach(case=case, data=data, filename=name, run_hooks=False)
            outcomes.append("stored")
        except services.DuplicatePhoto:
            outcomes.append("duplicate")
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            outcomes.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upload, args=(f"same-{i}.jpg",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["duplicate", "stored"], outcomes
    assert Photo.objects.filter(case=case).count() == 1
    assert len(media_files()) == len(before) + 1
    assert len(deleted) == 1  # the loser's file was written, then removed when the insert failed


@pytest.mark.django_db
def test_unreadable_colour_profile_does_not_hide_a_good_photo(case):
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 80, 70)).save(out, "JPEG", quality=95, icc_profile=b"not an ICC profile" * 20)
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="odd-profile.jpg", run_hooks=False)
    img = stored_image(photo)
    assert "icc_profile" not in img.info and b"not an ICC profile" not in stored_bytes(photo)


@pytest.mark.django_db
def test_embedded_rgb_profile_is_applied_then_dropped(case):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(out, "PNG", icc_profile=srgb)
    photo = services.photo_attach(case=case, data=out.getvalue(), filename="srgb.png", run_hooks=False)
    img = stored_image(photo)
    assert img.getpixel((3, 3)) == (200, 40, 40)  # sRGB -> sRGB is the identity
    assert "icc_profile" not in img.info
