"""Production is the safe default: every entry point (manage.py, wsgi.py, celery.py) loads
derm_portal.settings.production unless told otherwise; production refuses unsafe values
with one clear line; `check --deploy` is clean; HSTS/SSL redirect on and configurable; no
HTTP Basic on the API; a shared Redis cache; `./run prod` serves with gunicorn.
Each case runs Django in a fresh process with its own environment."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
PG = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
if "postgres" not in PG:
    PG = "postgres://postgres@127.0.0.1:5432/test"
REDIS = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/6")
if not REDIS.startswith("redis"):
    REDIS = "redis://127.0.0.1:6379/6"


def _env(tmp_path, **overrides) -> dict:
    """The process environment without any settings choice, plus a valid production set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "CELERY_", "DERM_"))}
    env.update(
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=PG,
        CELERY_BROKER_URL=REDIS,
        DERM_VAR_DIR=str(tmp_path / "var"),
        PYTHONPATH=str(REPO),
    )
    env.update({k: v for k, v in overrides.items() if v is not None})
    for k in [k for k, v in overrides.items() if v is None]:
        env.pop(k, None)
    return env


def _run(args, env, timeout=120):
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _settings_json(env, *names):
    """Load settings in a fresh process through wsgi.py (the web server's entry point)."""
    code = (
        "import json, derm_portal.wsgi; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=str))"
    )
    out = _run([sys.executable, "-c", code], env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is empty or not set"),
        ({"DJANGO_SECRET_KEY": "   "}, "DJANGO_SECRET_KEY is empty or not set"),
        ({"DJANGO_SECRET_KEY": "short-key"}, "DJANGO_SECRET_KEY is too weak"),
        ({"DATABASE_URL": None}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "sqlite:////tmp/derm.sqlite3"}, "DATABASE_URL uses 'sqlite'; production needs PostgreSQL"),
        ({"DATABASE_URL": "nosuchdb://host/x"}, "DATABASE_URL cannot be read"),
        ({"CELERY_BROKER_URL": "filesystem://"}, "CELERY_BROKER_URL is 'filesystem'; production needs Redis"),
        ({"CELERY_BROKER_URL": "memory://"}, "CELERY_BROKER_URL is 'memory'; production needs Redis"),
        ({"CELERY_BROKER_URL": None}, "CELERY_BROKER_URL is not set"),
        ({"DERM_CACHE_URL": "locmem://"}, "DERM_CACHE_URL is 'locmem'; it must point at Redis"),
    ],
)
def test_production_refuses_unsafe_settings_with_one_clear_line(tmp_path, overrides, message):
    out = _run([sys.executable, "manage.py", "check"], _env(tmp_path, **overrides))
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr and "KeyError" not in out.stderr, out.stderr[-2000:]
    assert "DJANGO_SETTINGS_MODULE=derm_portal.settings.base" in out.stderr  # says how to run the demo instead


def test_every_entry_point_defaults_to_production(tmp_path):
    env = _env(tmp_path, DJANGO_SECRET_KEY=None)  # production would refuse: proves which settings load
    celery = str(Path(sys.executable).with_name("celery"))
    for args in (
        [sys.executable, "-c", "import derm_portal.wsgi"],
        [celery, "-A", "derm_portal", "worker", "--pool=solo", "-Q", "interactive", "-l", "warning"],
    ):
        out = _run(args, env, timeout=90)
        assert out.returncode != 0 and "Production settings: DJANGO_SECRET_KEY" in out.stderr, (
            args,
            out.stderr[-1500:],
        )
    out = _run([sys.executable, "manage.py", "check"], env)
    assert out.returncode != 0 and "Production settings: DJANGO_SECRET_KEY" in out.stderr
    # With a valid environment each loads production, DEBUG off.
    good = _env(tmp_path)
    assert _settings_json(good, "SETTINGS_MODULE", "DEBUG") == {
        "SETTINGS_MODULE": "derm_portal.settings.production",
        "DEBUG": False,
    }
    code = "from derm_portal.celery import app; import django; django.setup(); from django.conf import settings; print(settings.SETTINGS_MODULE, app.conf.broker_url)"
    out = _run([sys.executable, "-c", code], good)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["derm_portal.settings.production", REDIS], out.stderr[
        -1500:
    ]
    # The demo and the tests name their settings explicitly.
    assert "DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-derm_portal.settings.base}" in (REPO / "run").read_text()
    assert "DJANGO_SETTINGS_MODULE = derm_portal.settings.test" in (REPO / "pytest.ini").read_text()


def test_check_deploy_is_clean_in_production(tmp_path):
    out = _run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], _env(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "System check identified no issues" in out.stdout


def test_production_security_settings_and_their_switches(tmp_path):
    names = (
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "REST_FRAMEWORK",
        "CACHES",
        "ALLOWED_HOSTS",
    )
    s = _settings_json(_env(tmp_path), *names)
    assert s["SECURE_SSL_REDIRECT"] is True and s["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600
    assert s["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and s["SESSION_COOKIE_SECURE"] and s["CSRF_COOKIE_SECURE"]
    # No HTTP Basic on the API in production: passwords are only typed into the locked-out login page.
    assert s["REST_FRAMEWORK"]["DEFAULT_AUTHENTICATION_CLASSES"] == [
        "rest_framework.authentication.SessionAuthentication"
    ]
    # One Redis cache for every process (rate limits), the broker's Redis unless DERM_CACHE_URL says otherwise.
    assert s["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert s["CACHES"]["default"]["LOCATION"] == REDIS
    assert "testserver" not in s["ALLOWED_HOSTS"]
    off = _settings_json(
        _env(
            tmp_path,
            DJANGO_SECURE_SSL_REDIRECT="0",
            DJANGO_SECURE_HSTS_SECONDS="0",
            DERM_CACHE_URL="redis://127.0.0.1:6379/9",
        ),
        *names,
    )
    assert off["SECURE_SSL_REDIRECT"] is False and off["SECURE_HSTS_SECONDS"] == 0
    assert off["CACHES"]["default"]["LOCATION"] == "redis://127.0.0.1:6379/9"
    # The demo keeps Basic auth for local scripts and needs no HTTPS.
    base = _settings_json(
        _env(tmp_path, DJANGO_SETTINGS_MODULE="derm_portal.settings.base"), "REST_FRAMEWORK", "SECURE_SSL_REDIRECT"
    )
    assert (
        "rest_framework.authentication.BasicAuthentication" in base["REST_FRAMEWORK"]["DEFAULT_AUTHENTICATION_CLASSES"]
    )
    assert base["SECURE_SSL_REDIRECT"] is False


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:
        return False


def test_phone_rate_limit_counts_across_processes_with_the_shared_cache(tmp_path):
    """Two web processes share the Redis cache: the phone-link limit counts once, not per process."""
    need(_redis_up(), f"Redis at {REDIS}")
    key = f"derm:test-rl:{secrets.token_hex(6)}"
    code = (
        "import django, sys; django.setup(); from annotation.phone.views import _hit; "
        f"print(sum(_hit({key!r}, 5) for _ in range(4)))"
    )
    env = _env(
        tmp_path,
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DERM_CACHE_URL=REDIS,
        DERM_CACHE_KEY_PREFIX=f"t{secrets.token_hex(3)}",
    )
    first, second = (_run([sys.executable, "-c", code], env) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-1500:] + second.stderr[-1500:]
    # 4 hits in the first process, all under the limit of 5; the second process's 4 hits
    # are hits 5..8, so 3 of them are over: the count was shared.
    assert first.stdout.split()[-1] == "0" and second.stdout.split()[-1] == "3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(sql)


def _postgres_up() -> bool:
    try:
        _pg_admin("SELECT 1")
        return True
    except Exception:
        return False


def test_run_prod_serves_with_gunicorn_and_production_settings(tmp_path):
    """`./run prod` on a throw-away database: check --deploy, migrate, collectstatic, then
    gunicorn; error pages carry no traceback or URL list, a NUL in a filter is a 400."""
    need(_postgres_up() and _redis_up(), "PostgreSQL and Redis for the production server")
    name = f"derm_prod_check_{os.getpid()}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
    _pg_admin(f'CREATE DATABASE "{name}"')
    db_url = PG.rsplit("/", 1)[0] + "/" + name
    port = _free_port()
    env = _env(
        tmp_path,
        DATABASE_URL=db_url,
        DERM_BIND=f"127.0.0.1:{port}",
        DERM_WEB_WORKERS="1",
        DERM_CACHE_KEY_PREFIX=f"t{secrets.token_hex(3)}",
    )
    env["PATH"] = os.environ.get("PATH", "")
    log = open(tmp_path / "prod.log", "w")
    proc = subprocess.Popen(
        ["./run", "prod"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 480  # migrations on a fresh database (slow on a busy 2-core machine)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:  # /healthz answers plain HTTP (exempt from the SSL redirect)
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "prod.log").read_text()[-3000:]

        def get(path, proxy_https=True):
            """One request, redirects not followed; as if a TLS proxy forwarded it (X-Forwarded-Proto)."""
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", path, headers={"X-Forwarded-Proto": "https"} if proxy_https else {})
            r = conn.getresponse()
            result = r.status, r.read().decode(errors="replace"), dict(r.getheaders())
            conn.close()
            return result

        status, _, headers = get("/accounts/login/", proxy_https=False)
        assert status == 301 and headers["Location"].startswith("https://")  # SSL redirect on
        status, body, headers = get("/accounts/login/")
        assert status == 200 and "Log in" in body and headers.get("X-Frame-Options") == "DENY"
        assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
        css = next((REPO / "static").rglob("*.css")).relative_to(REPO / "static").as_posix()
        assert get("/static/" + css)[0] == 200  # collected and served without a proxy
        status, body, _ = get("/cases/?q=%00")
        assert status == 400 and "NUL" in body and "Traceback" not in body
        assert get("/api/cases/?q=a%00")[0] == 400
        status, body, headers = get("/no-such-page/")  # anonymous: to the login page, no URL list
        assert status == 302 and headers["Location"].startswith("/accounts/login/")
        assert "URLconf" not in body and "Traceback" not in body
        log_text = (tmp_path / "prod.log").read_text()
        assert "gunicorn" in log_text.lower() and "System check identified no issues" in log_text, log_text[-3000:]
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
