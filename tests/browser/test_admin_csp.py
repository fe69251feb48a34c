"""The admin works under its Content-Security-Policy in a real Chromium: no violation is
reported, and the admin's own scripts still run (select-all in the flag list)."""

from urllib.request import urlopen

import pytest

from tests import factories
from tests.browser.test_admin_browser import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    _require_chromium,
    _wait,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def logging_browser(tmp_path):
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_admin_pages_run_under_the_policy(logging_browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    browser = logging_browser
    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    factories.flag(project, "dark-mode")
    factories.user("root", superuser=True)
    with urlopen(f"{live_server.url}/admin/login/") as response:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]

    browser.get(f"{live_server.url}/admin/")
    _wait(browser, shown.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys("root")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait(browser, shown.presence_of_element_located((By.ID, "user-tools")))
    pages = [
        "/admin/flags/flag/",
        f"/admin/flags/flag/{flag.pk}/change/",
        "/admin/flags/segment/add/",
        f"/admin/flags/changerequest/exposures/{factories.config(flag, 'production').pk}/",
    ]
    for page in pages:
        browser.get(live_server.url + page)
        _wait(browser, shown.presence_of_element_located((By.ID, "content")))

    browser.get(f"{live_server.url}/admin/flags/flag/")
    toggle = _wait(browser, shown.element_to_be_clickable((By.ID, "action-toggle")))
    toggle.click()
    rows = browser.find_elements(By.CSS_SELECTOR, "input.action-select")
    assert len(rows) == 2 and all(row.is_selected() for row in rows), "admin scripts ran"

    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []
