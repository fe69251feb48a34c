"""The SDK evaluates hostile contexts in the embedding process without crashing or stalling it.

The SDK ships the engine, so a string the hash or the regular expression engine cannot
handle would take the customer's service down with it. Each case runs in a subprocess: a
crash (SIGSEGV) is an exit status the test sees, not a vanished test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.sdk.conftest import SDK_SOURCE

DOCUMENT = {
    "schemaVersion": 1,
    "version": 3,
    "flags": {
        "split": {
            "type": "boolean",
            "enabled": True,
            "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "offVariant": "off",
            "defaultServe": {
                "rollout": {
                    "bucketBy": "account",
                    "variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}],
                }
            },
        },
        "pattern": {
            "type": "boolean",
            "enabled": True,
            "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "offVariant": "off",
            "rules": [
                {
                    "id": "greedy",
                    "conditions": [
                        {"attribute": "name", "operator": "matches", "values": ["(a+)+$"]}
                    ],
                    "serve": {"variant": "on"},
                }
            ],
            "defaultServe": {"variant": "off"},
        },
    },
}

SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from flagclient import FlagClient

contexts = [
    {"targetingKey": "\\ud800", "account": "a"},
    {"targetingKey": "u", "account": "\\udfff\\ud800"},
    {"targetingKey": "u", "account": "x\\x00y", "name": "\\ud800"},
    {"targetingKey": "u", "name": "a" * 10_000 + "!"},
    {"targetingKey": "u", "name": ["a" * 5_000 + "!", "\\ud800"]},
]
answers = []
with FlagClient(offline=True, bootstrap_path=sys.argv[2]) as client:
    for context in contexts:
        for flag in ("split", "pattern"):
            started = time.perf_counter()
            details = client.details(flag, context, default=None)
            answers.append({
                "flag": flag,
                "value": details.value,
                "error": details.error_code,
                "seconds": time.perf_counter() - started,
            })
print(json.dumps(answers))
"""


def test_lone_surrogates_nul_and_pathological_regexes_never_crash_or_stall_the_caller(
    tmp_path: Path,
) -> None:
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text(json.dumps(DOCUMENT))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(SDK_SOURCE), str(bootstrap)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"the embedding process died ({done.returncode}): {done.stderr}"
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(answers) == 10
    by_case = [answers[i : i + 2] for i in range(0, 10, 2)]
    # A targetingKey or a bucketing attribute that is not valid Unicode: INVALID_CONTEXT.
    assert by_case[0][0]["error"] == "INVALID_CONTEXT"
    assert by_case[1][0]["error"] == "INVALID_CONTEXT"
    # NUL is ordinary text: the rollout buckets it; a surrogate in the matched attribute is refused.
    assert by_case[2][0]["error"] is None and by_case[2][0]["value"] in (True, False)
    assert by_case[2][1]["error"] == "INVALID_CONTEXT"
    # (a+)+$ against 10 kB that does not match: linear time, no match, no error.
    assert by_case[3][1] == {**by_case[3][1], "value": False, "error": None}
    assert max(answer["seconds"] for answer in answers) < 0.5, answers
