"""The admin works under its Content-Security-Policy in a real Chromium: no violation is
reported, and the admin's own scripts still run (select-all in the flag list)."""

from urllib.request import urlopen

import pytest

from tests import factories
from tests.browser.chromium import log_in, wait

pytestmark = pytest.mark.browser


def test_admin_pages_run_under_the_policy(browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    factories.flag(project, "dark-mode")
    factories.user("root", superuser=True)
    with urlopen(f"{live_server.url}/admin/login/") as response:
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]

    log_in(browser, live_server, "root")
    pages = [
        "/admin/flags/flag/",
        f"/admin/flags/flag/{flag.pk}/change/",
        "/admin/flags/segment/add/",
        f"/admin/flags/changerequest/exposures/{factories.config(flag, 'production').pk}/",
    ]
    for page in pages:
        browser.get(live_server.url + page)
        wait(browser, shown.presence_of_element_located((By.ID, "content")))

    browser.get(f"{live_server.url}/admin/flags/flag/")
    toggle = wait(browser, shown.element_to_be_clickable((By.ID, "action-toggle")))
    toggle.click()
    rows = browser.find_elements(By.CSS_SELECTOR, "input.action-select")
    assert len(rows) == 2 and all(row.is_selected() for row in rows), "admin scripts ran"

    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []
