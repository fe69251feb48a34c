"""Single sign-on in a real headless Chromium: the admin's button, the provider's form, back
in the admin with the role the group gives. A screenshot is kept in var/sso-login.png."""

from __future__ import annotations

from pathlib import Path

import pytest

from flags.models import Membership
from tests import factories
from tests.browser.chromium import browser, wait  # noqa: F401 - the fixture
from tests.integrations.test_sso import PASSWORD, person, start_provider  # noqa: F401

pytestmark = pytest.mark.browser
SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "sso-login.png"


def test_a_person_signs_in_through_the_provider_in_a_browser(
    browser,  # noqa: F811
    start_provider,  # noqa: F811
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    factories.flag(factories.project("shop"), "new-checkout")
    start_provider({"alice": person("flags-devs")})

    browser.get(f"{live_server.url}/admin/login/")
    wait(browser, shown.element_to_be_clickable((By.LINK_TEXT, "Sign in with single sign-on")))
    browser.find_element(By.LINK_TEXT, "Sign in with single sign-on").click()
    wait(browser, shown.presence_of_element_located((By.ID, "login")))
    browser.find_element(By.ID, "login").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "submit").click()

    wait(browser, shown.presence_of_element_located((By.ID, "user-tools")))
    assert "alice" in browser.find_element(By.ID, "user-tools").text.lower()
    browser.get(f"{live_server.url}/admin/flags/flag/")
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, "#result_list")))
    assert "new-checkout" in browser.page_source
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert Membership.objects.get(user__username="alice", project__key="shop").role == "editor"
