"""The flag page in a real headless Chromium writes through the same service as the API: a
publisher switches production on (audited `enable`, as from the API) and renames a rule,
which keeps its id."""

import pytest

from flags.models import AuditEntry, Rule
from tests import factories
from tests.browser.chromium import log_in, wait

pytestmark = pytest.mark.browser

RULE = {
    "name": "US",
    "conditions": [{"attribute": "country", "operator": "in", "values": ["US"]}],
    "serve": {"variant": "on"},
}


def test_the_flag_page_switches_production_on_and_edits_a_rule_through_the_service(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    tmp_path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout", name="New checkout")
    factories.configure(flag, "production", rules=[RULE])
    rule = Rule.objects.get(flag=flag)
    factories.member(project, "publisher", username="pub")
    log_in(browser, live_server, "pub")

    page = f"{live_server.url}/admin/flags/flag/{flag.pk}/change/"
    browser.get(page)
    wait(browser, shown.element_to_be_clickable((By.ID, "tab-env-production"))).click()
    production = wait(browser, shown.element_to_be_clickable((By.NAME, "configs-2-enabled")))
    production.click()
    browser.find_element(By.NAME, "_save").click()
    # Production is protected: the review page first, nothing written yet.
    comment = wait(
        browser, shown.element_to_be_clickable((By.CSS_SELECTOR, ".flags-review textarea"))
    )
    assert factories.config(flag, "production").enabled is False
    comment.send_keys("Launch")
    browser.find_element(By.NAME, "_review_save").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, "#result_list")))
    assert factories.config(flag, "production").enabled is True
    entry = AuditEntry.objects.filter(object_type="flag_config").first()
    assert (entry.source, entry.action, entry.object_key) == (
        "admin",
        "enable",
        "new-checkout/production",
    )
    assert entry.comment == "Launch"
    assert factories.config(flag, "production").versions.first().action == "enable"

    browser.get(page)
    wait(browser, shown.element_to_be_clickable((By.ID, "tab-env-production"))).click()
    name = wait(browser, shown.element_to_be_clickable((By.NAME, "rules-0-name")))
    name.clear()
    name.send_keys("US only")
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.element_to_be_clickable((By.NAME, "_review_save"))).click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    browser.execute_script("document.getElementById('env-production').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "flag-page-saved.png"))  # the rule, with its id
    rule_after = Rule.objects.get(flag=flag)
    assert (rule_after.pk, rule_after.key, rule_after.name) == (rule.pk, rule.key, "US only")
    assert AuditEntry.objects.filter(object_type="flag_config").first().action == "update"
    shown_key = browser.find_element(By.CSS_SELECTOR, "#env-production td.field-key").text.strip()
    assert shown_key == rule.key


def test_the_flag_page_shows_a_rollout_as_percentages_after_a_save(
    browser,  # noqa: F811
    live_server,
    transactional_db,
    tmp_path,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown

    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout", name="New checkout")
    factories.member(project, "editor", username="ed")
    log_in(browser, live_server, "ed")

    browser.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    serve = wait(browser, shown.element_to_be_clickable((By.NAME, "configs-0-serve_variant")))
    browser.execute_script("arguments[0].value = ''", serve)  # a rollout instead of a variant
    rollout = browser.find_element(By.NAME, "configs-0-rollout")
    builder = rollout.find_element(By.XPATH, "./ancestor::div[contains(@class, 'flags-builder')]")
    builder.find_element(By.CSS_SELECTOR, ".flags-json-toggle").click()  # the JSON view
    rollout.clear()
    rollout.send_keys('[{"variant": "on", "weight": 1}, {"variant": "off", "weight": 999}]')
    browser.find_element(By.NAME, "_continue").click()
    wait(browser, shown.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    split = browser.find_element(By.CSS_SELECTOR, "#configs-0 td.field-split").text.strip()
    browser.execute_script(
        "arguments[0].scrollIntoView()",
        rollout := browser.find_element(By.NAME, "configs-0-rollout"),
    )
    browser.save_screenshot(str(tmp_path / "flag-page-split.png"))
    assert split == "on 0.1% · off 99.9%"
    assert factories.config(flag, "development").rollout == [
        {"variant": "on", "weight": 1},
        {"variant": "off", "weight": 999},
    ]
