import os
import shutil

import pytest


def require_services() -> bool:
    """CI sets DERM_REQUIRE_SERVICES=1: then a missing PostgreSQL, Redis or browser
    fails the test instead of skipping it."""
    return os.environ.get("DERM_REQUIRE_SERVICES") == "1"


def need(condition: bool, why: str):
    if condition:
        return
    if require_services():
        pytest.fail(f"required for CI: {why}")
    pytest.skip(why)


@pytest.fixture(autouse=True)
def _fresh_shared_rows():
    """No test sees rows another test cached (derm_portal.shared_cache): a rolled-back test sends no signal."""
    from derm_portal import shared_cache

    shared_cache.retire_all()


@pytest.fixture
def taxonomy(db):
    from annotation.services import taxonomy_load_default

    return taxonomy_load_default()


@pytest.fixture
def make_user(db):
    from tests.factories import UserFactory

    def _make(role=None, **kwargs):
        return UserFactory(role=role, **kwargs)

    return _make


@pytest.fixture
def users(db):
    """One user per role (admin as a group member, not a superuser)."""
    from derm_portal import roles
    from tests.factories import UserFactory

    return {role: UserFactory(username=f"u-{role}", role=role) for role in roles.ALL_ROLES}


@pytest.fixture
def case(db, users):
    from derm_portal import roles
    from tests.factories import CaseFactory

    return CaseFactory(created_by=users[roles.DERMATOLOGIST])


@pytest.fixture
def chromium_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    need(bool(chrome and driver), "Debian's chromium and chromium-driver are not installed")
    return chrome, driver


@pytest.fixture
def browser(chromium_paths, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = chromium_paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1366,900",
    ):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    drv.implicitly_wait(3)
    yield drv
    drv.quit()


@pytest.fixture
def login(browser, live_server):
    """Log `user` in through the real login form."""
    from selenium.webdriver.common.by import By

    def _login(user, password="pw-test-123"):
        browser.get(live_server.url + "/accounts/login/")
        browser.find_element(By.NAME, "username").send_keys(user.username)
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # Wait for the login POST to finish (session cookie set) before the test
        # navigates on; otherwise a busy machine races the redirect.
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 30).until(lambda d: "/accounts/login/" not in d.current_url)
        return browser

    return _login
