"""Test settings: PostgreSQL and Redis when DATABASE_URL / CELERY_BROKER_URL are set
(CI sets both), SQLite and eager jobs otherwise. Files go to a temporary folder."""

import tempfile

from .base import *  # noqa: F403
from .base import env_bool

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = tempfile.mkdtemp(prefix="derm-test-media-")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": MEDIA_ROOT}},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DERM_MODEL_ROOT = tempfile.mkdtemp(prefix="derm-test-models-")
# Unit tests run jobs eagerly; the tests about Celery start a real worker themselves.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", True)
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

# Several test runs may share one PostgreSQL server (developers, CI): give each run
# its own throw-away test database.
import os as _os  # noqa: E402  (settings read after the base settings)

if "sqlite" not in DATABASES["default"]["ENGINE"]:  # noqa: F405  (SQLite tests stay in memory)
    DATABASES["default"].setdefault("TEST", {})  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = _os.environ.get("DERM_TEST_DB_NAME", f"test_derm_{_os.getpid()}")  # noqa: F405
