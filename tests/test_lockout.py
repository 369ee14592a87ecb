"""Brute-force protection (django-axes): wrong passwords lock out per account and per
client address on the login page, the admin login and the API's HTTP Basic auth; the
right password is refused during the lock-out; every role still logs in normally."""

from __future__ import annotations

import base64

import pytest
from django.conf import settings

from derm_portal import roles

PASSWORD = "pw-test-123"  # tests.factories.UserFactory


def _login(client, username, password, ip="127.0.0.1", path="/accounts/login/"):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def _fail(client, username, times, ip="127.0.0.1", path="/accounts/login/"):
    for _ in range(times):
        response = _login(client, username, "wrong-password", ip=ip, path=path)
        assert response.status_code in (200, 429)  # the form again, or the lock-out page


@pytest.mark.django_db
@pytest.mark.parametrize("role", roles.ALL_ROLES)
def test_every_role_logs_in_through_the_login_page(client, users, role):
    response = _login(client, users[role].username, PASSWORD)
    assert response.status_code == 302 and _logged_in(client)
    home = client.get("/", follow=True)
    assert home.status_code == 200 and not home.request["PATH_INFO"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_account_is_locked_after_the_failure_limit_even_from_another_address(client, users):
    user = users[roles.DERMATOLOGIST]
    limit = settings.AXES_FAILURE_LIMIT
    _fail(client, user.username, limit - 1)
    # Below the limit the right password still works.
    assert _login(client, user.username, PASSWORD).status_code == 302
    client.logout()
    # Nor does an insider's own good login from that address clear the count.
    assert _login(client, users[roles.ADMIN].username, PASSWORD).status_code == 302
    client.logout()
    _fail(client, user.username, 1, ip="10.0.0.1")
    # Locked: the right password from a fresh address is refused with the lock-out page.
    response = _login(client, user.username, PASSWORD, ip="10.0.0.2")
    assert response.status_code == 429 and not _logged_in(client)
    assert b"Too many login attempts" in response.content
    # Other accounts from that fresh address are not affected.
    assert _login(client, users[roles.ANNOTATOR].username, PASSWORD, ip="10.0.0.2").status_code == 302


@pytest.mark.django_db
def test_address_is_locked_after_failures_on_many_accounts(client, users):
    limit = settings.AXES_FAILURE_LIMIT
    for n in range(limit):  # one failure each on different (even unknown) account names
        _login(client, f"guess-{n}", "wrong-password", ip="10.0.0.9")
    response = _login(client, users[roles.READER].username, PASSWORD, ip="10.0.0.9")
    assert response.status_code == 429 and not _logged_in(client)
    # The same account from another address logs in.
    assert _login(client, users[roles.READER].username, PASSWORD, ip="10.0.0.10").status_code == 302


@pytest.mark.django_db
def test_admin_is_locked_out_and_the_admin_login_is_no_side_door(client, make_user):
    admin = make_user(None, is_superuser=True, is_staff=True)
    # The admin's own login form is behind the portal login: no password is checked there.
    response = _login(client, admin.username, "wrong-password", path="/django-admin/login/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    _fail(client, admin.username, settings.AXES_FAILURE_LIMIT)
    response = _login(client, admin.username, PASSWORD, ip="10.0.0.3")
    assert response.status_code == 429 and not _logged_in(client)
    assert client.get("/django-admin/").status_code == 302


@pytest.mark.django_db
def test_api_basic_auth_is_locked_out(client, users):
    user = users[roles.DERMATOLOGIST]

    def basic(password, ip="127.0.0.1"):
        token = base64.b64encode(f"{user.username}:{password}".encode()).decode()
        return client.get("/api/cases/", HTTP_AUTHORIZATION=f"Basic {token}", REMOTE_ADDR=ip)

    assert basic(PASSWORD).status_code == 200
    for _ in range(settings.AXES_FAILURE_LIMIT):
        assert basic("wrong-password").status_code in (401, 403)
    # Locked: the right password is refused too, from any address, and so is the login page.
    assert basic(PASSWORD, ip="10.0.0.4").status_code in (401, 403)
    assert _login(client, user.username, PASSWORD, ip="10.0.0.4").status_code == 429


@pytest.mark.django_db
def test_lockout_ends_after_the_cool_off(client, users, settings):
    from datetime import timedelta

    from axes.models import AccessAttempt

    user = users[roles.ANNOTATOR]
    _fail(client, user.username, settings.AXES_FAILURE_LIMIT)
    assert _login(client, user.username, PASSWORD).status_code == 429
    # Age the recorded attempts past the cool-off instead of waiting for it.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.first().attempt_time - timedelta(hours=1))
    assert _login(client, user.username, PASSWORD).status_code == 302


def test_trusted_proxy_sets_the_client_address(rf, settings):
    from derm_portal.middleware import TrustedProxyMiddleware

    seen = {}

    def view(request):
        seen["ip"] = request.META["REMOTE_ADDR"]

    settings.DERM_TRUSTED_PROXY_COUNT = 1
    TrustedProxyMiddleware(view)(rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.1.2.3", REMOTE_ADDR="127.0.0.1"))
    assert seen["ip"] == "10.1.2.3"  # the address the proxy saw, not the spoofable first entry
    settings.DERM_TRUSTED_PROXY_COUNT = 0
    TrustedProxyMiddleware(view)(rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR="127.0.0.1"))
    assert seen["ip"] == "127.0.0.1"
