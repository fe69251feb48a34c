"""Webhooks in the deployed shape: a server, `manage.py run_scheduler` sending deliveries,
one receiver that hangs and one that answers. Writes return promptly whatever the
receivers do, and a hung receiver holds up only its own deliveries."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.servers import ROOT, Cluster

pytestmark = pytest.mark.server

TIMEOUT_SECONDS = 8
MAKE_WEBHOOKS = """
import json
from flags.models import Project
from integrations import webhooks
project = Project.objects.get(key="shop")
made = {}
for name, url in json.loads(URLS).items():
    webhook, secret = webhooks.webhook_create(
        project=project, data={"name": name, "url": url}, actor=None, source="system"
    )
    made[name] = webhook.pk
print(json.dumps(made))
"""
READ_DELIVERIES = """
import json
from integrations.models import Delivery
rows = Delivery.objects.order_by("id").values("webhook__name", "status", "attempts", "error")
print(json.dumps(list(rows)))
"""


def test_a_hanging_receiver_never_slows_a_write_nor_the_other_receivers(receivers):
    hanging, answering = receivers(hang=True), receivers()
    env = {"WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS), "WEBHOOK_RETRY_SECONDS": "60"}
    with Cluster(instances=1, extra_env=env) as cluster:
        urls = json.dumps({"hanging": hanging.url, "answering": answering.url})
        cluster.manage("shell", "-c", f"URLS = {urls!r}\n{MAKE_WEBHOOKS}")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "run_scheduler", "--interval", "1"],
            cwd=ROOT,
            env=cluster.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api = httpx.Client(
                base_url=cluster.url(0),
                headers={"Authorization": f"Bearer {cluster.token()}"},
                timeout=30,
            )
            toggle = "/api/v1/projects/shop/flags/new-checkout/environments/development/toggle"
            durations = []
            for enabled in (True, False, True):
                started = time.monotonic()
                response = api.post(toggle, json={"enabled": enabled})
                durations.append(time.monotonic() - started)
                assert response.status_code == 200, response.text
                time.sleep(0.5)  # let the first delivery to the hanging receiver start

            # Each write took far less than the receiver's timeout it never waited for.
            assert max(durations) < TIMEOUT_SECONDS / 2, durations
            got = answering.wait_for(3, seconds=30)
            assert [r.json["after"]["enabled"] for r in got] == [True, False, True]
            assert len(hanging.wait_for(1, seconds=30)) == 1  # the rest wait behind it

            deadline = time.monotonic() + TIMEOUT_SECONDS + 30
            rows: list[dict] = []
            while time.monotonic() < deadline:
                rows = json.loads(cluster.manage("shell", "-c", READ_DELIVERIES).splitlines()[-1])
                if any(row["error"] for row in rows):
                    break
                time.sleep(1)
            timed_out = [row for row in rows if row["webhook__name"] == "hanging"]
            assert timed_out[0]["error"] == f"no answer within {TIMEOUT_SECONDS}s"
            assert timed_out[0]["status"] == "pending" and timed_out[0]["attempts"] == 1
            assert [row["attempts"] for row in timed_out[1:]] == [0, 0]
            sent = [row["status"] for row in rows if row["webhook__name"] == "answering"]
            assert sent == ["sent"] * 3
        finally:
            hanging.released.set()
            worker.terminate()
            try:
                worker.wait(TIMEOUT_SECONDS + 10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
