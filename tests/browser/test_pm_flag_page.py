"""A product manager's tasks on the flag pages in a real headless Chromium (Debian's):
create a flag, set a rollout in one environment's tab, read what each environment serves.

Each task counts the clicks it takes (typing is not counted; choosing from a list is) and
saves a screenshot in tests/browser/screenshots/ to look at.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from flags.models import ExposureCount, Flag, Rule
from tests import factories
from tests.browser.accessibility import assert_inputs_labelled, unlabelled_inputs
from tests.browser.chromium import Clicks, log_in, screenshot, wait

pytestmark = pytest.mark.browser

MOST_CLICKS = 3
THIRTY_PERCENT = {
    "rollout": {"variants": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]}
}
PRO_IN_US = {
    "name": "Pro in US",
    "conditions": [
        {"attribute": "country", "operator": "in", "values": ["US"]},
        {"attribute": "plan", "operator": "equals", "values": ["pro"]},
    ],
    "serve": {"variant": "on"},
}


def _tab(browser, name: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(
        By.XPATH, f"//a[@role='tab'][starts-with(normalize-space(), '{name}')]"
    )


def _panel(browser, name: str):
    from selenium.webdriver.common.by import By

    tab = _tab(browser, name)
    return browser.find_element(By.ID, tab.get_attribute("aria-controls"))


@pytest.fixture
def shop(transactional_db):
    project = factories.project("shop")
    factories.member(project, "publisher", username="pm")
    return project


def test_a_product_manager_creates_a_flag_in_at_most_three_clicks(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/")
    clicks = Clicks(browser)

    clicks(
        wait(browser, shown.element_to_be_clickable((By.CSS_SELECTOR, ".object-tools a.addlink")))
    )
    key = wait(browser, shown.element_to_be_clickable((By.NAME, "key")))
    assert_inputs_labelled(browser, "the add page")

    # A boolean flag's variants are shown as what it gets: on (true) and off (false), once
    # the admin's inline script has drawn the rows (a moment on a busy machine).
    def variant_values(browser) -> list[str]:
        return [
            box.get_attribute("value")
            for box in browser.find_elements(By.CSS_SELECTOR, "textarea[name$='-value']")
            if box.is_displayed()
        ]

    wait(browser, lambda b: variant_values(b) == ["true", "false"])
    key.send_keys("one-click-checkout")
    browser.find_element(By.NAME, "name").send_keys("One-click checkout")
    screenshot(browser, "pm-create-flag-form")
    clicks(browser.find_element(By.NAME, "_save"))

    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, "#result_list")))
    screenshot(browser, "pm-create-flag-list")
    flag = Flag.objects.get(key="one-click-checkout")
    assert (flag.project, flag.name) == (shop, "One-click checkout")
    assert list(flag.variants.values_list("key", "value")) == [("on", True), ("off", False)]
    assert clicks.count <= MOST_CLICKS, clicks.count


def test_a_product_manager_sets_a_rollout_in_an_environments_tab(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    factories.configure(flag, "staging", enabled=True)
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    clicks = Clicks(browser)

    clicks(wait(browser, shown.element_to_be_clickable(_tab_locator("Staging"))))
    staging = _panel(browser, "Staging")
    assert staging.is_displayed() and not _panel(browser, "Development").is_displayed()
    serve = staging.find_element(
        By.CSS_SELECTOR, "select[name^='configs-'][name$='-serve_variant']"
    )
    # Picking "— rollout —" gives the builder a row per variant, the first at 100%.
    clicks.choose(serve, "— rollout —")
    rollout = staging.find_element(By.CSS_SELECTOR, "textarea[name^='configs-'][name$='-rollout']")
    assert not rollout.is_displayed(), "the rollout is edited in the builder, not as JSON"
    builder = rollout.find_element(By.XPATH, "./ancestor::div[contains(@class, 'flags-builder')]")
    percents = builder.find_elements(By.CSS_SELECTOR, ".flags-percent")
    assert [p.get_attribute("value") for p in percents] == ["100", "0"]
    for box, percent in zip(percents, ("30", "70"), strict=True):
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(percent)
    assert builder.find_element(By.CSS_SELECTOR, ".flags-rollout-total").text == "Total 100%"
    screenshot(browser, "pm-rollout-builder-in-staging", staging)
    clicks(browser.find_element(By.NAME, "_continue"))

    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    staging = _panel(browser, "Staging")
    assert staging.is_displayed(), "the page reopens in the tab the change was made in"
    sentence = staging.find_element(By.CSS_SELECTOR, ".flag-sentence").text
    assert sentence == "On → serves 30% on / 70% off"
    screenshot(browser, "pm-rollout-in-staging", _tab(browser, "Staging"))
    assert factories.config(flag, "staging").rollout == [
        {"variant": "on", "weight": 30},
        {"variant": "off", "weight": 70},
    ]
    assert factories.config(flag, "development").rollout == []
    assert clicks.count <= MOST_CLICKS, clicks.count


def _tab_locator(name: str):
    from selenium.webdriver.common.by import By

    return (By.XPATH, f"//a[@role='tab'][starts-with(normalize-space(), '{name}')]")


def test_a_product_manager_reads_what_each_environment_serves(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    factories.configure(
        flag, "production", enabled=True, rules=[PRO_IN_US], defaultServe=THIRTY_PERCENT
    )
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/")
    clicks = Clicks(browser)

    row = wait(
        browser,
        shown.presence_of_element_located(
            (By.XPATH, "//tr[.//a[normalize-space()='new-checkout']]")
        ),
    )
    production = row.find_element(By.CSS_SELECTOR, "td.field-state_production")
    assert production.find_element(By.CSS_SELECTOR, ".flag-state").text == "On"
    assert production.find_element(By.CSS_SELECTOR, ".flag-serving").text == "30% on · 1 rule"
    development = row.find_element(By.CSS_SELECTOR, "td.field-state_development")
    assert development.text.strip() == "Off"
    screenshot(browser, "pm-summary-list")

    clicks(row.find_element(By.LINK_TEXT, "new-checkout"))
    clicks(wait(browser, shown.element_to_be_clickable(_tab_locator("Production"))))
    panel = _panel(browser, "Production")
    sentence = panel.find_element(By.CSS_SELECTOR, ".flag-sentence")
    assert sentence.text == "On · rule Pro in US → on · everyone else: 30% on / 70% off"
    assert sentence.find_element(By.TAG_NAME, "em").text == "Pro in US"
    # Only production's rule is in its tab; the others have none.
    assert [
        box.get_attribute("value")
        for box in panel.find_elements(By.CSS_SELECTOR, "input[name$='-name']")
        if box.get_attribute("value")
    ] == ["Pro in US"]
    screenshot(browser, "pm-summary-production-tab", _tab(browser, "Production"))
    assert clicks.count <= MOST_CLICKS, clicks.count


def test_a_new_rule_row_in_a_tab_saves_serving_a_variant(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    development = wait(browser, shown.visibility_of_element_located((By.ID, "env-development")))
    name = development.find_element(By.CSS_SELECTOR, "tr.flag-new-row input[name$='-name']")
    name.send_keys("Staff")
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    assert "was changed successfully" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    rule = Rule.objects.get(flag=flag)
    assert (rule.environment.key, rule.name, rule.serve_variant, rule.rollout) == (
        "development",
        "Staff",
        "on",
        [],
    )


def test_every_box_on_the_flag_page_has_a_label_in_every_tab(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    other = factories.flag(shop, "login")
    factories.configure(
        flag,
        "staging",
        rules=[PRO_IN_US],
        targets=[{"variant": "on", "values": ["user-1"]}],
        prerequisites=[{"flag": other.key, "variants": ["on"]}],
    )
    config = factories.configure(flag, "production", enabled=True)
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for variant, count in (("on", 1200), ("off", 400)):
        ExposureCount.objects.create(
            environment=config.environment,
            flag_key=flag.key,
            variant=variant,
            reason="STATIC",
            hour=hour,
            count=count,
            last_at=timezone.now(),
        )
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".flag-tabs-ready")))
    tabs = browser.find_elements(By.CSS_SELECTOR, "a[role='tab']")
    assert [tab.text.split("\n")[0].split(" ")[0] for tab in tabs][:3] == [
        "Development",
        "Staging",
        "Production",
    ]
    missing = {}
    for tab in tabs:
        tab.click()
        missing[tab.text] = unlabelled_inputs(browser)
        screenshot(browser, f"flag-page-tab-{tab.get_attribute('aria-controls')}", tab)
    assert all(not boxes for boxes in missing.values()), missing


def test_the_page_reopens_on_the_tab_with_the_error(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    wait(browser, shown.element_to_be_clickable(_tab_locator("Staging"))).click()
    staging = _panel(browser, "Staging")
    rollout = staging.find_element(By.CSS_SELECTOR, "textarea[name^='configs-'][name$='-rollout']")
    builder = rollout.find_element(By.XPATH, "./ancestor::div[contains(@class, 'flags-builder')]")
    builder.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()  # the JSON view
    rollout.clear()
    rollout.send_keys('[{"variant": "on", "weight": 30}')  # not JSON: the bracket is missing
    _tab(browser, "Development").click()  # the tab last opened is not the one with the error
    browser.find_element(By.NAME, "_continue").click()

    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".errornote")))
    staging = _panel(browser, "Staging")
    assert staging.is_displayed() and not _panel(browser, "Development").is_displayed()
    assert staging.find_element(By.CSS_SELECTOR, ".errorlist").is_displayed()
    # The box with the error opens in its JSON view, as typed, with the builder's note.
    rollout = staging.find_element(By.CSS_SELECTOR, "textarea[name^='configs-'][name$='-rollout']")
    assert rollout.is_displayed()
    assert rollout.get_attribute("value") == '[{"variant": "on", "weight": 30}'
    builder = rollout.find_element(By.XPATH, "./ancestor::div[contains(@class, 'flags-builder')]")
    assert (
        "The JSON is not valid" in builder.find_element(By.CSS_SELECTOR, ".flags-builder-note").text
    )
    screenshot(browser, "flag-page-error-in-staging", _tab(browser, "Staging"))
    assert factories.config(flag, "staging").rollout == []


def test_a_product_manager_picks_a_prerequisite_by_typing_part_of_its_key(
    browser,  # noqa: F811
    live_server,
    shop,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    flag = factories.flag(shop, "new-checkout", name="New checkout")
    for key in ("login", "login-v2", "payments"):
        factories.flag(shop, key)
    factories.flag(factories.project("elsewhere"), "login-elsewhere")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    clicks = Clicks(browser)

    clicks(wait(browser, shown.element_to_be_clickable(_tab_locator("Staging"))))
    staging = _panel(browser, "Staging")
    required = staging.find_element(
        By.CSS_SELECTOR, "select[name^='prerequisites-'][name$='-required_flag']"
    )
    assert required.find_elements(By.TAG_NAME, "option") == [] or all(
        not option.get_attribute("value")
        for option in required.find_elements(By.TAG_NAME, "option")
    ), "no menu of every flag: the box searches"
    box = required.find_element(By.XPATH, "following-sibling::span[contains(@class, 'select2')]")
    clicks(box.find_element(By.CSS_SELECTOR, ".select2-selection"))
    search = wait(
        browser,
        shown.visibility_of_element_located((By.CSS_SELECTOR, ".select2-search__field")),
    )
    assert_inputs_labelled(browser, "the prerequisite search")
    search.send_keys("login")

    def results(browser):  # noqa: F811
        options = browser.find_elements(By.CSS_SELECTOR, ".select2-results__option")
        texts = [option.text for option in options]
        return options if texts == ["login", "login-v2"] else False

    found = wait(browser, results)  # the project's flags that match, not payments
    screenshot(browser, "pm-prerequisite-search", staging)
    clicks(found[1])
    variants = staging.find_element(
        By.CSS_SELECTOR, "textarea[name^='prerequisites-'][name$='-variants']"
    )
    variants.send_keys("on")
    clicks(browser.find_element(By.NAME, "_continue"))

    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    screenshot(browser, "pm-prerequisite-saved", _tab(browser, "Staging"))
    prerequisite = factories.config(flag, "staging").flag.prerequisites.get()
    assert (prerequisite.required_flag.key, prerequisite.variants) == ("login-v2", ["on"])
    assert prerequisite.environment.key == "staging"
    assert clicks.count <= 4, clicks.count
