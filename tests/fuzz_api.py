"""Fuzz the REST API from its own OpenAPI schema with schemathesis (`make fuzz`).

Starts a real server on a store of its own (tests.servers.Cluster), logs in as a superuser
(management API), presents a server key (evaluation API), and lets schemathesis generate
requests for every operation in /api/schema/, valid and not, failing on any 5xx response
or a response that does not match the schema. The budget is bounded by FUZZ_EXAMPLES
(examples per operation, default 30) and FUZZ_SECONDS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import Cluster  # noqa: E402

EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "30")
SECONDS = int(os.environ.get("FUZZ_SECONDS", "600"))


def main() -> int:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    with Cluster(instances=1) as cluster:
        base = cluster.url(0)
        command = [
            str(schemathesis),
            "run",
            f"{base}/api/schema/",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {cluster.token(0)}",
            # Evaluation endpoints take the key from X-API-Key before Authorization.
            "--header",
            f"X-API-Key: {cluster.seed['server_key']}",
            # The event stream never ends by design.
            "--exclude-path",
            "/api/v1/stream",
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
            "--max-examples",
            EXAMPLES,
            "--seed",
            os.environ.get("FUZZ_SEED", "1"),
            "--no-color",
        ]
        secrets = (cluster.seed["server_key"], "Bearer ")
        shown = [part if not any(x in part for x in secrets) else "<secret>" for part in command]
        print("$", " ".join(shown))
        try:
            done = subprocess.run(command, timeout=SECONDS)
        except subprocess.TimeoutExpired:
            print(f"fuzzing stopped after the {SECONDS}s budget")
            return 0
        if done.returncode != 0:
            print(f"server log:\n{cluster.log(cluster.ports[0])[-5000:]}")
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
