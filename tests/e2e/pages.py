"""Helpers for the browser tests."""

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def submit_and_wait(browser, element, timeout=30):
    """Click a button or link that loads a new page and wait until the old page is gone and the
    new one has loaded.

    Waiting on the new page's text straight after the click races the navigation: the query can
    find the old page's element, which goes stale before its text is read. While the page is being
    replaced, chromedriver can also answer a query about the old element with a generic "unhandled
    inspector error" instead of "stale element": retried, not a failure."""
    element.click()
    wait = WebDriverWait(browser, timeout, ignored_exceptions=(WebDriverException,))
    wait.until(EC.staleness_of(element))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")
