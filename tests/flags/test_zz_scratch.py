from tests import factories
from tests.flags.test_admin import as_role, flag_url

def test_scratch(client, db):
    project = factories.project("shop")
    f = factories.flag(project, "new-checkout")
    factories.configure(f, "production", enabled=True, rules=[{"name": "Pro in US", "conditions": [], "serve": {"variant": "on"}}], defaultServe={"rollout": {"variants": [{"variant":"on","weight":30},{"variant":"off","weight":70}]}} )
    as_role(client, project, "editor")
    r = client.get(flag_url(f))
    print("STATUS", r.status_code)
    open("/tmp/page.html","w").write(r.content.decode())
