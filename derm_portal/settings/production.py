"""Production: the default settings outside `./run serve` and the tests.

Everything that matters comes from the environment; a missing or unsafe value stops the
process at start-up with a message that says what to set (see `_refuse`).
"""

import os

import dj_database_url

from . import SettingsRefused


def _refuse(problem: str) -> None:
    raise SettingsRefused(
        f"Production settings: {problem} (derm_portal.settings.production is the default outside "
        "`./run serve` and the tests; for the local demo use `./run serve` or set "
        "DJANGO_SETTINGS_MODULE=derm_portal.settings.base)."
    )


# Checked before the shared settings read the same variables, so a bad value is named here.
_secret = os.environ.get("DJANGO_SECRET_KEY", "").strip()
if not _secret:
    _refuse(
        "DJANGO_SECRET_KEY is empty or not set; generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`"
    )
if len(_secret) < 50 or len(set(_secret)) < 5 or _secret.startswith("django-insecure"):
    _refuse("DJANGO_SECRET_KEY is too weak (at least 50 characters, not a django-insecure key)")

_db_url = os.environ.get("DATABASE_URL", "").strip()
if not _db_url:
    _refuse("DATABASE_URL is not set; point it at PostgreSQL (postgres://user@host:5432/derm)")
try:
    _db = dj_database_url.parse(_db_url, conn_max_age=60)
except Exception as _exc:  # unknown scheme or malformed URL
    _refuse(f"DATABASE_URL cannot be read ({_exc}); use postgres://user@host:5432/derm")
if "postgresql" not in _db.get("ENGINE", ""):
    _refuse(
        f"DATABASE_URL uses {_db_url.split(':', 1)[0]!r}; production needs PostgreSQL (postgres://...), "
        "not SQLite or another engine"
    )

_broker = os.environ.get("CELERY_BROKER_URL", "").strip()
if not _broker.startswith(("redis://", "rediss://")):
    _refuse(
        f"CELERY_BROKER_URL is {_broker.split(':', 1)[0]!r}; production needs Redis "
        "(redis://host:6379/0), not the file-system or in-memory broker of the local demo"
        if _broker
        else "CELERY_BROKER_URL is not set; point it at Redis (redis://host:6379/0)"
    )

# One cache for every web process (rate limits hold across workers): DERM_CACHE_URL,
# or the broker's Redis when unset.
_cache_url = os.environ.get("DERM_CACHE_URL", "").strip() or _broker
if not _cache_url.startswith(("redis://", "rediss://")):
    _refuse(f"DERM_CACHE_URL is {_cache_url.split(':', 1)[0]!r}; it must point at Redis (redis://host:6379/1)")

from .base import *  # noqa: E402, F403
from .base import REST_FRAMEWORK, env_bool  # noqa: E402

DEBUG = False
SECRET_KEY = _secret
DATABASES = {"default": _db}
CELERY_BROKER_URL = _broker
CELERY_TASK_ALWAYS_EAGER = False

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _cache_url,
        "KEY_PREFIX": os.environ.get("DERM_CACHE_KEY_PREFIX", "derm"),
    }
}

# Sessions only on the API: HTTP Basic would let anyone guess passwords there.
DERM_API_BASIC_AUTH = False
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
}

ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

# HTTPS everywhere; set DJANGO_SECURE_SSL_REDIRECT=0 only when a proxy redirects instead.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Preloading is a commitment to the browsers' list that is slow to undo: the
    # operator opts in with DJANGO_SECURE_HSTS_PRELOAD=1; check --deploy would nag.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = True
# Sessions read from the shared Redis cache (written through to the database): one query less per page.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# gunicorn serves the collected static files itself (`./run prod` runs collectstatic);
# set DERM_SERVE_STATIC=0 when a reverse proxy serves STATIC_ROOT instead.
DERM_SERVE_STATIC = env_bool("DERM_SERVE_STATIC", True)
