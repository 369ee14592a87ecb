"""Settings shared by every environment, read from the environment.

With no environment at all this is the embedded first-run demo: SQLite in var/,
files on the local disk in var/media, Celery jobs run eagerly in-process.
Set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis) to run on real services.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("DERM_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-dev-key-only-for-the-local-demo")
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = [
    h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / ReDoc served from our static files (no CDN)
    "axes",  # login lockout per account and per client address (admin, login page, API auth)
    "derm_portal",
    "annotation",
    "inference",
    "reports",
]

MIDDLEWARE = [
    "derm_portal.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "derm_portal.middleware.RejectNulMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "derm_portal.middleware.LoginRequiredMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into a 429 page
]

ROOT_URLCONF = "derm_portal.urls"
WSGI_APPLICATION = "derm_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "derm_portal.roles.roles_context",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{VAR_DIR / 'derm_portal.sqlite3'}", conn_max_age=60)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# Brute-force protection (django-axes): after DERM_LOGIN_FAILURE_LIMIT wrong passwords for
# one account, or from one client address, further attempts are refused for
# DERM_LOGIN_COOLOFF_MINUTES, even with the right password. Attempts live in the database,
# so every web process shares them. `manage.py axes_reset` unlocks everyone.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("DERM_LOGIN_FAILURE_LIMIT", 5))
AXES_COOLOFF_TIME = float(os.environ.get("DERM_LOGIN_COOLOFF_MINUTES", 15)) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks out
# A successful login does not clear failures: axes would clear them for the whole address,
# so an insider could keep guessing another account by logging in between guesses.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_ENABLE_ADMIN = True
# Behind a reverse proxy: how many proxies append to X-Forwarded-For (0: trust no header;
# REMOTE_ADDR is the client). Used by login lockout and the phone-link rate limit.
DERM_TRUSTED_PROXY_COUNT = int(os.environ.get("DERM_TRUSTED_PROXY_COUNT", 0))

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = os.environ.get("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = Path(os.environ.get("DERM_MEDIA_ROOT", VAR_DIR / "media"))
# No MEDIA_URL is routed: clinical files are streamed by permission-checked views.
MEDIA_URL = "/no-public-media/"

# Files go through STORAGES: local disk by default, an S3-compatible object store
# (django-storages) when DERM_S3_BUCKET is set. Keys are never in the repo.
if os.environ.get("DERM_S3_BUCKET"):
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["DERM_S3_BUCKET"],
            "endpoint_url": os.environ.get("DERM_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("DERM_S3_REGION") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": 300,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads
DATA_UPLOAD_MAX_MEMORY_SIZE = 30 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DERM_MAX_UPLOAD_BYTES = int(os.environ.get("DERM_MAX_UPLOAD_BYTES", 25 * 1024 * 1024))
DERM_MAX_PIXELS = int(os.environ.get("DERM_MAX_PIXELS", 60_000_000))
DATA_UPLOAD_MAX_NUMBER_FILES = 200

# Trained model artefacts (inference.ml directories) live here.
DERM_MODEL_ROOT = Path(os.environ.get("DERM_MODEL_ROOT", VAR_DIR / "models"))

# HTTP Basic on the API is for scripts against a local portal; production turns it off
# (DERM_API_BASIC_AUTH=0) so a password is never guessed through the API.
DERM_API_BASIC_AUTH = env_bool("DERM_API_BASIC_AUTH", True)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        *(["rest_framework.authentication.BasicAuthentication"] if DERM_API_BASIC_AUTH else []),
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Derm Portal API",
    "DESCRIPTION": "Cases, photos, pathology-confirmed labels, taxonomy, predictions and reader studies.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The API description is for staff who use the API, not for readers of blinded studies.
    "SERVE_PERMISSIONS": ["derm_portal.permissions.ApiDocsPermission"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status`: give each choice set its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "CaseStatusEnum": "annotation.models.CaseStatus",
        "AnnotationStatusEnum": "annotation.models.AnnotationStatus",
        "LabelSourceEnum": "annotation.models.LabelSource",
        "ModelStatusEnum": "inference.models.ModelStatus",
        "PredictionStatusEnum": "inference.models.PredictionStatus",
        "TrainingStatusEnum": "inference.models.TrainingStatus",
        "StudyStatusEnum": "reports.models.StudyStatus",
    },
}

# Cache: per process by default; DERM_CACHE_URL (redis://host:6379/1) shares it between
# every web process, so the phone-link rate limit counts once for the whole deployment.
DERM_CACHE_URL = os.environ.get("DERM_CACHE_URL", "")
if DERM_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": DERM_CACHE_URL,
            "KEY_PREFIX": os.environ.get("DERM_CACHE_KEY_PREFIX", "derm"),
        }
    }

# HTTPS (the production settings turn these on; configurable for a TLS-terminating proxy).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# /healthz answers plain HTTP too, so a load balancer can probe the web process directly.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Celery: two queues so a training run never delays a doctor's prediction.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_DEFAULT_QUEUE = "interactive"
# Task modules autodiscovery does not find (not named tasks.py).
CELERY_IMPORTS = ["annotation.crops"]  # annotation.tasks.make_crops (lesion crops, long queue)
CELERY_TASK_ROUTES = {
    "inference.tasks.run_prediction": {"queue": "interactive"},
    "inference.tasks.run_gradcam": {"queue": "interactive"},
    "inference.tasks.run_training": {"queue": "long"},
    "annotation.tasks.*": {"queue": "long"},
    "reports.tasks.*": {"queue": "long"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The job reconciler (derm_portal.reconcile, run by Celery beat): how often, how old a queued job must be
# before it is sent again, and how long a job it sent is left alone before being sent once more.
DERM_RECONCILE_SECONDS = int(os.environ.get("DERM_RECONCILE_SECONDS", 30))
DERM_RECONCILE_GRACE_SECONDS = int(os.environ.get("DERM_RECONCILE_GRACE_SECONDS", 60))
DERM_RECONCILE_RESEND_SECONDS = int(os.environ.get("DERM_RECONCILE_RESEND_SECONDS", 600))
# Several portals (or parallel test runs) may share one Redis: prefix every broker key.
if os.environ.get("CELERY_KEY_PREFIX"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": os.environ["CELERY_KEY_PREFIX"]}
# More kombu broker options as JSON, e.g. '{"visibility_timeout": 21600, "socket_timeout": 30}'.
# With Redis and acks_late, a job whose worker died is handed out again after
# visibility_timeout (kombu default 3600 s): keep it above the longest job.
if os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS"):
    import json as _json

    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
        **_json.loads(os.environ["CELERY_BROKER_TRANSPORT_OPTIONS"]),
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A prediction whose worker died is handed out again after 15 minutes (not kombu's
    # hour); every task re-checks its row, so a long training run that is redelivered
    # while its worker still beats its heartbeat is answered "busy" and left alone.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": 900,
        **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    }
if CELERY_BROKER_URL.startswith("filesystem://"):
    _q = VAR_DIR / "celery-queue"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_q),
        "data_folder_out": str(_q),
        "processed_folder": str(VAR_DIR / "celery-processed"),
        "store_processed": False,
        "control_folder": str(VAR_DIR / "celery-control"),
    }
    for _d in ("celery-queue", "celery-processed", "celery-control"):
        (VAR_DIR / _d).mkdir(parents=True, exist_ok=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Extension points between apps (annotation never imports inference or reports):
# callables run after a photo is committed, as hook(photo_pk=...)
DERM_PHOTO_ATTACHED_HOOKS: list[str] = []
# callables(request, case) -> HTML fragment shown on the case page
DERM_CASE_PANELS: list[str] = []
# Decision support (inference): a prediction is requested for every new photo; the case page
# shows the ranked differential with Grad-CAM overlays.
DERM_PHOTO_ATTACHED_HOOKS.append("inference.services.prediction_request_for_photo")
DERM_CASE_PANELS.append("inference.panels.prediction_panel")
# torch threads of a prediction worker (0: torch default = all cores). 1 by default: on the shared
# 2-core CPU one thread per worker is ~8x faster than two (bench/prediction_latency.py --threads);
# run more worker processes for throughput.
DERM_INFERENCE_THREADS = int(os.environ.get("DERM_INFERENCE_THREADS", 1)) or None

# Upload from phone (QR code on the case page -> /m/upload/<token>/, no login on the phone).
DERM_CASE_PANELS.append("annotation.phone.views.case_panel")
# Patient malignancy report links per photo (reports/patient_report.py).
DERM_CASE_PANELS.append("reports.patient_report.case_panel")
# Lesion boxes and review state per photo, with links to the annotation workspace.
DERM_CASE_PANELS.append("annotation.workspace_views.case_panel")
# Reader studies the case is part of (coordinators and admins).
DERM_CASE_PANELS.append("reports.panels.case_studies_panel")
# Base of the QR link when phones must use another name than the desk (e.g. a hospital LAN
# name, "https://derm.hospital.lan"); empty = the host the desk user reached.
DERM_PUBLIC_BASE_URL = os.environ.get("DERM_PUBLIC_BASE_URL", "")
DERM_PHONE_TOKEN_TTL_MINUTES = float(os.environ.get("DERM_PHONE_TOKEN_TTL_MINUTES", 15))
DERM_PHONE_TOKEN_MAX_PHOTOS = int(os.environ.get("DERM_PHONE_TOKEN_MAX_PHOTOS", 10))
DERM_PHONE_UPLOAD_RATE_PER_MINUTE = int(os.environ.get("DERM_PHONE_UPLOAD_RATE_PER_MINUTE", 60))
