import pytest
from tests import factories
from tests.browser.test_admin_csp import logging_browser  # noqa
from tests.browser.test_pm_rule_builder import _log_in
pytestmark = pytest.mark.browser
def test_debug(logging_browser, live_server, transactional_db):
    from selenium.webdriver.common.by import By
    b = logging_browser
    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    factories.member(project, "editor", username="pm")
    _log_in(b, live_server, "pm")
    b.get(f"{live_server.url}/admin/flags/flag/{flag.pk}/change/")
    b.find_element(By.CSS_SELECTOR, "#rules-group .add-row a").click()
    print(b.find_element(By.NAME, "rules-0-conditions").find_element(By.XPATH, "./..").get_attribute("outerHTML")[:3000])
    for e in b.get_log("browser"): print(e)
