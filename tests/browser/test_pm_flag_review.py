"""The flag page's review step in a real headless Chromium: a publisher changes production
from the flag page, sees what changes there, says why, and confirms (docs/admin.md, "Tasks
and their clicks")."""

import pytest

from flags.models import AuditEntry
from tests import factories
from tests.browser.chromium import Clicks, log_in, page_text, screenshot, wait

pytestmark = pytest.mark.browser


def test_change_production_from_the_flag_page_with_a_review(
    browser,
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By

    project = factories.project("shop", name="Shop")
    flag = factories.flag(project, "new-checkout")
    factories.member(project, "publisher", username="pm")
    log_in(browser, live_server, "pm")
    clicks = Clicks(browser)

    clicks.on(By.LINK_TEXT, "Flags")
    clicks.on(By.LINK_TEXT, "new-checkout")
    clicks.on(By.ID, "tab-env-production")
    clicks.on(By.NAME, "configs-2-enabled")
    clicks.on(By.NAME, "_save")

    wait(browser, lambda b: "Review your change" in page_text(b))
    assert "Production (protected)" in page_text(browser)
    assert "enabled: off → on" in page_text(browser)
    assert factories.config(flag, "production").enabled is False  # nothing saved yet
    browser.find_element(By.CSS_SELECTOR, ".flags-review textarea").send_keys(
        "Marketing launches today"
    )
    screenshot(browser, "flag-page-review")
    clicks.on(By.NAME, "_review_save")

    wait(browser, lambda b: "was changed successfully" in page_text(b))
    assert factories.config(flag, "production").enabled is True
    entry = AuditEntry.objects.get(action="enable", environment__key="production")
    assert (entry.source, entry.comment) == ("admin", "Marketing launches today")
    assert clicks.count == 6
