"""Test-only: drive the real server the SDK tests talk to (tests.servers.Cluster)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.servers import ROOT, Cluster

FLAG_URL = "/api/v1/projects/shop/flags/new-checkout/environments/production/toggle"


def set_enabled(cluster: Cluster, enabled: bool) -> float:
    """Toggle new-checkout through the management API; the monotonic time of the answer."""
    response = httpx.post(
        f"{cluster.url(0)}{FLAG_URL}",
        json={"enabled": enabled},
        headers={"Authorization": f"Bearer {cluster.token(0)}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return time.monotonic()


def kill(cluster: Cluster, index: int = 0) -> None:
    """Kill instance `index` and its workers at once, as a crash or a lost machine would.

    (`Cluster.stop` ends the master; a worker holding an open stream may outlive it for a
    while, and the point here is a server that is gone.)
    """
    process = cluster.processes[index]
    for pid in [*_children(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def restart(cluster: Cluster, index: int = 0) -> None:
    """Start instance `index` again on the port it had (clients keep their URL)."""
    port = cluster.ports[index]
    log = open(cluster.workdir / f"server-{port}.log", "a")  # noqa: SIM115
    cluster.processes[index] = subprocess.Popen(
        [sys.executable, "manage.py", "serve"],
        cwd=ROOT,
        env=cluster.env(PORT=str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{cluster.url(index)}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"instance {index} did not come back:\n{cluster.log(port)}")


def exposure_counts(cluster: Cluster, flag_key: str) -> dict[str, int]:
    """Evaluations per variant the server has stored for `flag_key` (after draining Redis)."""
    script = f"""
import json
from django.db.models import Sum
from evaluation import exposures
from flags.models import ExposureCount
exposures.drain()
rows = ExposureCount.objects.filter(flag_key={flag_key!r}).values("variant")
print(json.dumps({{row["variant"]: row["total"] for row in rows.annotate(total=Sum("count"))}}))
"""
    return json.loads(cluster.manage("shell", "-c", script).strip().splitlines()[-1])
