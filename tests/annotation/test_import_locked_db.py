"""import_boxes on the embedded SQLite database while another writer holds the lock:
it starts again once the lock is gone, and otherwise stops with a clear message (never a
traceback). Runs the real command in a subprocess against a file copy of the test database."""

import sqlite3
import subprocess
import sys

import pytest
from django.db import connection

from annotation.models import Box
from derm_portal import roles
from tests.annotation.test_voc_coco import photo_named, voc
from tests.embedded import env, manage

pytestmark = pytest.mark.django_db(transaction=True)


_SEED = """
from derm_portal import roles
from annotation.services import taxonomy_load_default
from tests.factories import UserFactory
from tests.annotation.test_voc_coco import photo_named
taxonomy_load_default()
UserFactory(username="u-admin", role=roles.ADMIN)
photo_named("lesion.jpg")
"""


@pytest.fixture
def sqlite_copy(tmp_path, taxonomy, users):
    """An embedded (SQLite) portal database: a file copy of the test database when the tests run on
    SQLite, else one migrated and seeded for this test (the suite on PostgreSQL runs it too)."""
    db = tmp_path / "portal.sqlite3"
    if connection.vendor == "sqlite":
        photo_named("lesion.jpg")
        dest = sqlite3.connect(db)
        connection.ensure_connection()
        connection.connection.backup(dest)
        dest.close()
    else:
        for args in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", _SEED]):
            r = manage(db, *args)
            assert r.returncode == 0, r.stderr[-3000:]
    xml = tmp_path / "lesion.xml"
    xml.write_bytes(voc("lesion.jpg", [("nv", 10, 10, 50, 40, 0, 0)]))
    return db, xml, users[roles.ADMIN].username


def _command(db, xml, user, *extra):
    cmd = [sys.executable, "manage.py", "import_boxes", str(xml), "--annotator", user, "--retry-wait", "0.5", *extra]
    return {"args": cmd, **env(db)}


def _import(db, xml, user, *extra):
    return subprocess.run(capture_output=True, timeout=120, check=False, **_command(db, xml, user, *extra))


def _hold_lock(db):
    """Another writer holding the write lock until the caller ends it."""
    lock = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # a writer; readers go on
    return lock


def _boxes(db):
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT COUNT(*) FROM {Box._meta.db_table}").fetchone()[0]


def test_locked_database_is_retried_then_imported(sqlite_copy):
    db, xml, user = sqlite_copy
    lock = _hold_lock(db)  # held past SQLite's busy timeout, released once the command says it retries
    proc = subprocess.Popen(stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_command(db, xml, user, "--retries", "5"))
    first = proc.stderr.readline()
    lock.execute("ROLLBACK")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, first + err
    assert "locked by another writer; starting again in 0.5 s (attempt 2 of 6)" in first
    assert "Traceback" not in err and "1 box(es) on 1 photo(s)" in out
    assert _boxes(db) == 1


def test_locked_database_gives_a_clear_message_not_a_traceback(sqlite_copy):
    db, xml, user = sqlite_copy
    lock = _hold_lock(db)
    try:
        r = _import(db, xml, user, "--retries", "0")
    finally:
        lock.execute("ROLLBACK")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "OperationalError" not in r.stderr
    assert "lesion.xml: the database stayed locked by another writer through 1 attempt(s)" in r.stderr
    assert "run the same command again" in r.stderr
    assert _boxes(db) == 0
