"""The Admin UI in a real headless Chromium (Debian's): log in, open a flag, switch it on in
one environment, and see the new state in the list.
"""

from urllib.request import urlopen

import pytest
from django.templatetags.static import static

from tests import factories
from tests.browser.chromium import PASSWORD, wait

pytestmark = pytest.mark.browser


def _state_in_list(browser, flag_key: str, environment_key: str) -> str:
    from selenium.webdriver.common.by import By

    row = browser.find_element(By.XPATH, f"//tr[.//a[normalize-space()='{flag_key}']]")
    return row.find_element(By.CSS_SELECTOR, f"td.field-state_{environment_key}").text.strip()


def test_a_product_manager_switches_a_flag_on_and_sees_it_in_the_list(
    browser, live_server, transactional_db
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout", name="New checkout")
    factories.member(project, "editor", username="pm")

    # The admin's static files are served (WhiteNoise finders in development).
    with urlopen(live_server.url + static("admin/css/base.css")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/css")

    # Log in.
    browser.get(f"{live_server.url}/admin/")
    wait(browser, shown.presence_of_element_located((By.ID, "id_username")))
    browser.find_element(By.ID, "id_username").send_keys("pm")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(browser, shown.presence_of_element_located((By.ID, "user-tools")))
    header = browser.find_element(By.ID, "header")
    assert header.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)", (
        "the admin's CSS did not load"
    )

    # Open the flag from the list and switch it on in development.
    browser.get(f"{live_server.url}/admin/flags/flag/")
    assert _state_in_list(browser, "new-checkout", "development") == "Off"
    browser.find_element(By.LINK_TEXT, "new-checkout").click()
    enabled = wait(browser, shown.element_to_be_clickable((By.NAME, "configs-0-enabled")))
    production = browser.find_element(By.NAME, "configs-2-enabled")
    assert not production.is_enabled(), "an editor must not be able to change production"
    enabled.click()
    browser.find_element(By.NAME, "_save").click()

    # Back on the list: the new state is shown.
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, "#result_list")))
    assert browser.current_url.rstrip("/").endswith("/admin/flags/flag")
    assert _state_in_list(browser, "new-checkout", "development") == "On"
    assert factories.config(flag, "development").enabled is True

    # The list's own buttons switch it too, without opening the flag.
    row = browser.find_element(By.XPATH, "//tr[.//a[normalize-space()='new-checkout']]")
    row.find_element(By.CSS_SELECTOR, "td.field-state_staging button").click()
    messages = (By.CSS_SELECTOR, ".messagelist")
    wait(browser, shown.text_to_be_present_in_element(messages, "is on in Staging"))
    assert _state_in_list(browser, "new-checkout", "staging") == "On"
    assert _state_in_list(browser, "new-checkout", "production") == "Off"
    assert factories.config(flag, "staging").enabled is True
