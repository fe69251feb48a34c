"""A product manager writes a rule and a rollout with the builders only, in a real Chromium:
no JSON typed, the live total followed, and what is saved is what the API would save.

Screenshots go to tests/browser/screenshots/ (not committed).
"""

import json

import pytest

from evaluation.documents import build_document
from flags.models import Rule, Segment
from tests import factories
from tests.browser.chromium import Clicks, log_in, screenshot, wait

pytestmark = pytest.mark.browser

WINDOW = (1600, 1400)  # the screenshots show a whole environment tab
COUNTRY_RULE = [{"attribute": "country", "operator": "in", "values": ["US", "CA"]}]
SPLIT = [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]


def _builder(driver, field_name):
    from selenium.webdriver.common.by import By

    source = driver.find_element(By.NAME, field_name)
    return source.find_element(By.XPATH, "./ancestor::div[contains(@class, 'flags-builder')]")


def _blank_rule(driver, environment: str) -> str:
    """The prefix of the blank rule row ("rules-N") in an environment's tab."""
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.CSS_SELECTOR, f"#env-{environment} tr.flag-new-row[id^='rules-']")
    return row.get_attribute("id")


def _document_flag(flag) -> dict:
    development = factories.environment(flag.project, "development")
    entry = build_document(development.pk)["flags"][flag.key]
    return {
        "rules": [{k: v for k, v in rule.items() if k != "id"} for rule in entry["rules"]],
        "defaultServe": entry["defaultServe"],
    }


def test_a_product_manager_adds_a_rule_and_a_rollout_without_typing_json(
    browser,  # noqa: F811
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    twin = factories.flag(project, "api-twin")
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    click = Clicks(browser)

    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    wait(browser, shown.visibility_of_element_located((By.ID, "env-development")))
    assert not browser.find_element(By.ID, "env-staging").is_displayed(), "one tab at a time"
    # Every environment the editor may change has its own blank rule row and builders in
    # its tab; production is protected, so an editor gets none there.
    for environment in ("development", "staging"):
        blank = _blank_rule(browser, environment)
        panel = browser.find_element(By.ID, f"env-{environment}")
        for field in ("conditions", "rollout"):
            _builder(panel, f"{blank}-{field}")  # found inside this tab's panel
    assert not browser.find_elements(By.CSS_SELECTOR, "#env-production tr.flag-new-row")
    prefix = _blank_rule(browser, "development")

    # The rule, in the Development tab's blank row: country is one of US, CA -> on.
    conditions = _builder(browser, f"{prefix}-conditions")
    assert conditions.find_element(By.XPATH, "./ancestor::section").get_attribute("id") == (
        "env-development"
    ), "the builder sits in the Development tab"
    assert not browser.find_element(By.NAME, f"{prefix}-conditions").is_displayed(), (
        "the JSON box is hidden behind the builder"
    )
    click(conditions.find_element(By.CSS_SELECTOR, ".flags-add-row"))
    row = conditions.find_element(By.CSS_SELECTOR, ".flags-condition")
    row.find_element(By.CSS_SELECTOR, ".flags-attribute").send_keys("country")
    operator = Select(row.find_element(By.CSS_SELECTOR, ".flags-operator"))
    assert operator.first_selected_option.text == "is one of"
    labels = [option.text for option in operator.options]
    assert {"is not one of", "starts with", "matches regex", "is in segment"} <= set(labels)
    value = row.find_element(By.CSS_SELECTOR, ".flags-value-input")
    value.send_keys("US", Keys.ENTER)  # Enter adds the next value and does not submit
    browser.switch_to.active_element.send_keys("CA")
    serve = Select(browser.find_element(By.NAME, f"{prefix}-serve_variant"))
    assert serve.first_selected_option.get_attribute("value") == "on", "a new rule serves on"

    # The development default: 30% on, 70% off, with the total followed as it is typed.
    # Picking "— rollout —" gives the builder a row per variant, the first at 100%.
    rollout = _builder(browser, "configs-0-rollout")
    total = rollout.find_element(By.CSS_SELECTOR, ".flags-rollout-total")
    click.choose(browser.find_element(By.NAME, "configs-0-serve_variant"), "— rollout —")
    served = Select(browser.find_element(By.NAME, "configs-0-serve_variant"))
    assert served.first_selected_option.get_attribute("value") == "", "a rollout, not a variant"
    percents = rollout.find_elements(By.CSS_SELECTOR, ".flags-percent")
    variants = [
        Select(s).first_selected_option.text
        for s in rollout.find_elements(By.CSS_SELECTOR, ".flags-variant")
    ]
    assert variants == ["on", "off"]
    assert [p.get_attribute("value") for p in percents] == ["100", "0"]
    assert total.text.startswith("Total 100%")
    percents[0].send_keys(Keys.CONTROL, "a")
    percents[0].send_keys("30")
    assert total.text.startswith("Total 30%")
    assert "flags-total-off" in total.get_attribute("class"), "shown in red"
    assert total.value_of_css_property("color") != "rgba(0, 0, 0, 1)"
    percents[1].send_keys(Keys.CONTROL, "a")
    percents[1].send_keys("70")
    assert total.text == "Total 100%"
    assert "flags-total-off" not in total.get_attribute("class")
    screenshot(browser, "pm_rule_builder_filled.png", window=WINDOW)

    click(browser.find_element(By.NAME, "_continue"))
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    rule = Rule.objects.get(flag=flag)
    assert (rule.conditions, rule.serve_variant, rule.rollout) == (COUNTRY_RULE, "on", [])
    config = factories.config(flag, "development")
    assert (config.serve_variant, config.rollout) == ("", SPLIT)
    assert click.count == 3, "add condition, rollout, save"

    # The same change made through the services the API calls gives the same document.
    factories.configure(
        twin,
        "development",
        rules=[{"name": "", "conditions": COUNTRY_RULE, "serve": {"variant": "on"}}],
        defaultServe={"rollout": {"bucketBy": "targetingKey", "variants": SPLIT}},
    )
    assert _document_flag(flag) == _document_flag(twin)

    # The saved page shows the builders filled in again, in plain words and percentages.
    conditions = _builder(browser, "rules-0-conditions")
    row = conditions.find_element(By.CSS_SELECTOR, ".flags-condition")
    assert row.find_element(By.CSS_SELECTOR, ".flags-attribute").get_attribute("value") == (
        "country"
    )
    chips = row.find_elements(By.CSS_SELECTOR, ".flags-value-input")
    assert [chip.get_attribute("value") for chip in chips] == ["US", "CA"]
    rollout = _builder(browser, "configs-0-rollout")
    percents = rollout.find_elements(By.CSS_SELECTOR, ".flags-percent")
    assert [p.get_attribute("value") for p in percents] == ["30", "70"]
    screenshot(
        browser,
        "pm_rule_builder_saved.png",
        browser.find_element(By.ID, "env-development"),
        window=WINDOW,
    )

    # A round trip through the JSON views changes nothing that is saved.
    versions = config.version
    for name in ("rules-0-conditions", "configs-0-rollout"):
        builder = _builder(browser, name)
        builder.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()
        source = browser.find_element(By.NAME, name)
        assert source.is_displayed()
        text = source.get_attribute("value")
        source.send_keys(Keys.CONTROL, "a")
        source.send_keys(text)  # typed again by hand, as a power user would
        builder.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()
        assert not source.is_displayed()
    rollout.find_element(By.CSS_SELECTOR, ".flags-weights-toggle").click()
    weights = rollout.find_elements(By.CSS_SELECTOR, ".flags-weight")
    assert [w.get_attribute("value") for w in weights] == ["30", "70"]
    rollout.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()  # both views at once
    screenshot(
        browser,
        "pm_rule_builder_json_and_weights.png",
        browser.find_element(By.ID, "env-development"),
        window=WINDOW,
    )
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    rule.refresh_from_db()
    config.refresh_from_db()
    assert (rule.conditions, config.rollout) == (COUNTRY_RULE, SPLIT)
    assert config.version == versions, "nothing changed, so no new version"


def test_segments_are_picked_by_name_numbers_stay_numbers_and_json_errors_show(
    browser,  # noqa: F811
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select

    from flags import services

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    services.segment_create(
        project=project, key="beta", data={"name": "Beta testers"}, **factories.SYSTEM
    )
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    wait(browser, shown.visibility_of_element_located((By.ID, "env-development")))

    # A rollout begun and taken back: the variant served before is served again.
    rollout = _builder(browser, "configs-0-rollout")
    served = Select(browser.find_element(By.NAME, "configs-0-serve_variant"))
    rollout.find_element(By.CSS_SELECTOR, ".flags-add-row").click()
    assert served.first_selected_option.get_attribute("value") == ""
    rollout.find_element(By.CSS_SELECTOR, ".flags-remove-row").click()
    assert served.first_selected_option.get_attribute("value") == "on"
    assert browser.find_element(By.NAME, "configs-0-rollout").get_attribute("value") == "[]"

    prefix = _blank_rule(browser, "development")
    conditions = _builder(browser, f"{prefix}-conditions")
    add = conditions.find_element(By.CSS_SELECTOR, ".flags-add-row")

    add.click()
    first = conditions.find_elements(By.CSS_SELECTOR, ".flags-condition")[0]
    Select(first.find_element(By.CSS_SELECTOR, ".flags-operator")).select_by_visible_text(
        "is in segment"
    )
    assert not first.find_element(By.CSS_SELECTOR, ".flags-attribute").is_displayed()
    Select(first.find_element(By.CSS_SELECTOR, "select.flags-value-input")).select_by_visible_text(
        "Beta testers (beta)"
    )
    first.find_element(By.CSS_SELECTOR, ".flags-negate-box").click()

    add.click()
    second = conditions.find_elements(By.CSS_SELECTOR, ".flags-condition")[1]
    second.find_element(By.CSS_SELECTOR, ".flags-attribute").send_keys("age")
    Select(second.find_element(By.CSS_SELECTOR, ".flags-operator")).select_by_visible_text(
        "at least"
    )
    second.find_element(By.CSS_SELECTOR, ".flags-value-input").send_keys("18")
    Select(browser.find_element(By.NAME, f"{prefix}-serve_variant")).select_by_value("on")
    screenshot(browser, "pm_rule_builder_segment.png", window=WINDOW)
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert Rule.objects.get(flag=flag).conditions == [
        {"operator": "in_segment", "values": ["beta"], "negate": True},
        {"attribute": "age", "operator": "gte", "values": [18]},
    ]

    # An operator typed in the JSON view that the engine does not know: shown as unknown,
    # refused on saving with the environment and rule named, and nothing is saved.
    conditions = _builder(browser, "rules-0-conditions")
    conditions.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()
    source = browser.find_element(By.NAME, "rules-0-conditions")
    source.send_keys(Keys.CONTROL, "a")
    source.send_keys('[{"attribute": "age", "operator": "resembles", "values": ["x"]}]')
    operator = Select(conditions.find_element(By.CSS_SELECTOR, ".flags-operator"))
    assert operator.first_selected_option.text == "resembles (unknown)"
    browser.find_element(By.NAME, "_continue").click()
    error = wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".errornote")))
    assert error.is_displayed()
    page = browser.find_element(By.ID, "content").text
    assert "Development: rules[0]" in page and "unknown operator 'resembles'" in page
    screenshot(browser, "pm_rule_builder_error.png", window=WINDOW)
    assert Rule.objects.get(flag=flag).conditions[1]["operator"] == "gte"


def test_a_segment_is_written_with_the_builder(
    browser,  # noqa: F811
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select

    project = factories.project("shop")
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/segment/add/")
    Select(wait(browser, shown.presence_of_element_located((By.NAME, "project")))).select_by_index(
        1
    )
    browser.find_element(By.NAME, "key").send_keys("staff")
    browser.find_element(By.NAME, "name").send_keys("Staff")
    conditions = _builder(browser, "conditions")
    conditions.find_element(By.CSS_SELECTOR, ".flags-add-row").click()
    row = conditions.find_element(By.CSS_SELECTOR, ".flags-condition")
    row.find_element(By.CSS_SELECTOR, ".flags-attribute").send_keys("email")
    operator = Select(row.find_element(By.CSS_SELECTOR, ".flags-operator"))
    assert "is in segment" not in [option.text for option in operator.options]
    operator.select_by_visible_text("ends with")
    row.find_element(By.CSS_SELECTOR, ".flags-value-input").send_keys("@example.com")
    screenshot(browser, "pm_segment_builder.png", window=WINDOW)
    browser.find_element(By.NAME, "_save").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert Segment.objects.get(key="staff").conditions == [
        {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}
    ]


def test_percentages_become_weights_on_the_rollouts_own_total_when_they_fit(
    browser,  # noqa: F811
    live_server,
    transactional_db,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    quarter = [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 3}]
    factories.configure(flag, "development", defaultServe={"rollout": {"variants": quarter}})
    factories.member(project, "editor", username="pm")
    log_in(browser, live_server, "pm")
    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    wait(browser, shown.visibility_of_element_located((By.ID, "env-development")))
    rollout = _builder(browser, "configs-0-rollout")
    source = browser.find_element(By.NAME, "configs-0-rollout")
    percents = rollout.find_elements(By.CSS_SELECTOR, ".flags-percent")
    assert [p.get_attribute("value") for p in percents] == ["25", "75"]

    def type_percents(first: str, second: str) -> list[int]:
        for box, text in zip(percents, (first, second), strict=True):
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(text)
        return [entry["weight"] for entry in json.loads(source.get_attribute("value"))]

    assert type_percents("50", "50") == [2, 2], "the saved total of 4 still holds them"
    assert type_percents("12.5", "87.5") == [125, 875]
    assert type_percents("33.333", "66.667") == [33_333, 66_667]
    total = rollout.find_element(By.CSS_SELECTOR, ".flags-rollout-total")
    assert total.text == "Total 100%"

    # What the builder cannot show stays in the JSON view, with the reason.
    rollout.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()
    source.send_keys(Keys.CONTROL, "a")
    source.send_keys('[{"variant": "on", "weight": "lots"}]')
    note = rollout.find_element(By.CSS_SELECTOR, ".flags-builder-note")
    assert "Only the JSON view can show this" in note.text
    source.send_keys(Keys.CONTROL, "a")
    source.send_keys('[{"variant": "on", "weight": 1}, {"variant": "off", "weight": 7}]')
    assert note.text == ""
    percents = rollout.find_elements(By.CSS_SELECTOR, ".flags-percent")
    assert [p.get_attribute("value") for p in percents] == ["12.5", "87.5"]
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert factories.config(flag, "development").rollout == [
        {"variant": "on", "weight": 1},
        {"variant": "off", "weight": 7},
    ], "what is typed in the JSON view is what is saved"


def test_without_scripts_the_json_boxes_show_and_save(
    browser_without_scripts, live_server, transactional_db
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import Select

    driver = browser_without_scripts
    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    factories.member(project, "editor", username="pm")
    log_in(driver, live_server, "pm")
    driver.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    source = wait(driver, shown.visibility_of_element_located((By.NAME, "configs-0-rollout")))
    rows = _builder(driver, "configs-0-rollout").find_element(
        By.CSS_SELECTOR, ".flags-builder-rows"
    )
    assert not rows.is_displayed(), "the builder needs its script"
    Select(driver.find_element(By.NAME, "configs-0-serve_variant")).select_by_value("")
    source.clear()
    source.send_keys(json.dumps(SPLIT))
    driver.find_element(By.NAME, "_continue").click()
    wait(driver, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert factories.config(flag, "development").rollout == SPLIT
