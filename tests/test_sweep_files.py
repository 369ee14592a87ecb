"""manage.py sweep_files: stored files no row refers to (an interrupted import's photos) are listed,
and removed only with --delete and only when old enough; referenced files, fresh files and folders
the portal's files do not live in are never touched."""

import io
import os
import time

import pytest
from django.core.management import call_command

from tests.factories import CaseFactory, make_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    return tmp_path


def _file(root, name, age_s):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _sweep(*args):
    out = io.StringIO()
    call_command("sweep_files", *args, stdout=out)
    return out.getvalue()


def test_only_old_unreferenced_files_in_the_portals_folders_are_removed(media):
    photo = make_photo(CaseFactory())
    kept = media / photo.file.name
    os.utime(kept, (time.time() - 7200,) * 2)  # old, but a row refers to it
    stray = _file(media, "photos/case-999/left-by-a-killed-import.jpg", 7200)
    fresh = _file(media, "photos/case-999/being-written-now.jpg", 10)
    elsewhere = _file(media, "not-the-portals/notes.txt", 7200)

    listed = _sweep()
    assert "1 stored file(s) no row refers to" in listed and "left-by-a-killed-import.jpg" in listed
    assert "nothing removed" in listed and stray.exists()

    assert "removed 1 file(s)" in _sweep("--delete")
    assert not stray.exists()
    assert kept.exists() and fresh.exists() and elsewhere.exists()
    assert "0 stored file(s)" in _sweep("--delete", "--min-age-minutes", "60")
    # with no minimum age the fresh one goes too; the referenced photo never
    assert "removed 1 file(s)" in _sweep("--delete", "--min-age-minutes", "0")
    assert not fresh.exists() and kept.exists()


def test_a_negative_age_is_refused(media):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="min-age-minutes"):
        _sweep("--min-age-minutes", "-1")
