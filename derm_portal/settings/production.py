"""Production: everything that matters must come from the environment."""
import os

from .base import *  # noqa: F401,F403

DEBUG = False
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
if not os.environ.get("DATABASE_URL"):
    raise RuntimeError("DATABASE_URL must point at PostgreSQL in production")
if not os.environ.get("CELERY_BROKER_URL"):
    raise RuntimeError("CELERY_BROKER_URL must point at Redis in production")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
