"""Unleash's own client specification, run through the Unleash importer, the store and the engine.

Each specification file is imported (`flags.importers.import_from`) into an environment of
its own; the environment's flag document is built from the store and compiled by the
engine, and every assertion of the file is checked against the answer. The specification
lives next to the repository (`../shared/suites/unleash-client-specification/`, Apache-2.0):
the test is skipped with a message when it is absent, and fails in CI (CI=true).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.flags.importing import import_and_compile

pytestmark = pytest.mark.django_db

SUITE = Path(__file__).resolve().parents[3] / "shared/suites/unleash-client-specification"
SPECIFICATIONS = SUITE / "specifications"

# Assertions that cannot pass, by (file, description), with the reason: 2 of the 279
# assertions are known not to pass.
NAMES = "a flag key is lowercase ASCII: the importer skips a flag whose name is not one"
KNOWN: dict[tuple[str, str], str] = {
    (
        "18-utf8-flag-names.json",
        "Feature.UTF-8.Hellø_Wørld feature toggle should be enabled",
    ): NAMES,
    (
        "18-utf8-flag-names.json",
        "Feature.UTF-8.😊_φriend_你好_🌍 feature toggle should be enabled",
    ): NAMES,
}


def specification_files() -> list[str]:
    if not (SPECIFICATIONS / "index.json").is_file():
        return []
    return json.loads((SPECIFICATIONS / "index.json").read_text())


def require_suite() -> None:
    if (SPECIFICATIONS / "index.json").is_file():
        return
    reason = f"the Unleash client specification is not at {SUITE}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Unleash client specification: {reason}")
    pytest.skip(reason)


def context_of(unleash: dict[str, Any]) -> dict[str, Any]:
    """An Unleash context as this product's: userId is the targetingKey, properties flat."""
    context: dict[str, Any] = dict(unleash.get("properties") or {})
    for field, value in unleash.items():
        if field == "properties":
            continue
        context["targetingKey" if field == "userId" else field] = value
    return context


def variant_answer(flag: dict[str, Any] | None, result: Any) -> dict[str, Any]:
    """Unleash's getVariant answer from the flag's result."""
    if flag is None or result.error_code is not None:
        return {"name": "disabled", "enabled": False, "feature_enabled": False}
    if flag["type"] == "boolean":
        return {"name": "disabled", "enabled": False, "feature_enabled": result.value is True}
    return result.value  # the variant's value is Unleash's answer


def is_enabled(flag: dict[str, Any] | None, result: Any) -> bool:
    if flag is None or result.error_code is not None:
        return False
    if flag["type"] == "boolean":
        return result.value is True
    return result.variant != "disabled"


def run_file(name: str) -> tuple[list[str], list[tuple[str, str]], int]:
    """(failures, known failures that passed, assertions) of one specification file."""
    spec = json.loads((SPECIFICATIONS / name).read_text())
    snapshot, conversion = import_and_compile("unleash", spec["state"], f"unleash-{name[:2]}")
    document = snapshot.document
    failures, fixed, count = [], [], 0
    for case in spec.get("tests", []):
        count += 1
        key = conversion.keys.get(case["toggleName"])
        flag = document["flags"].get(key) if key else None
        result = snapshot.evaluate(key or "?", context_of(case["context"]))
        answer = is_enabled(flag, result)
        passed = answer == case["expectedResult"]
        record(name, case, passed, answer, conversion, failures, fixed)
    for case in spec.get("variantTests", []):
        count += 1
        key = conversion.keys.get(case["toggleName"])
        flag = document["flags"].get(key) if key else None
        result = snapshot.evaluate(key or "?", context_of(case["context"]))
        answer = variant_answer(flag, result)
        expected = {
            "name": case["expectedResult"]["name"],
            "enabled": case["expectedResult"]["enabled"],
            "feature_enabled": case["expectedResult"].get(
                "feature_enabled", answer["feature_enabled"]
            ),
        }
        if "payload" in case["expectedResult"]:
            expected["payload"] = case["expectedResult"]["payload"]
        passed = answer == expected
        record(name, case, passed, answer, conversion, failures, fixed)
    return failures, fixed, count


def record(name, case, passed, answer, conversion, failures, fixed) -> None:
    known = (name, case["description"]) in KNOWN
    if passed and known:
        fixed.append((name, case["description"]))
    if not passed and not known:
        skipped = conversion.skipped.get(case["toggleName"])
        why = f" (skipped: {skipped})" if skipped else ""
        failures.append(f"{case['description']}: got {answer!r}{why}")


@pytest.mark.parametrize("name", specification_files() or ["(absent)"])
def test_unleash_client_specification(name: str) -> None:
    require_suite()
    failures, fixed, _ = run_file(name)
    assert not failures, failures
    assert not fixed, f"known failures that now pass (remove them from KNOWN): {fixed}"


def test_the_known_failures_are_counted() -> None:
    assert len(KNOWN) == 2


def test_the_specification_is_all_there() -> None:
    require_suite()
    files = specification_files()
    total = 0
    for name in files:
        spec = json.loads((SPECIFICATIONS / name).read_text())
        total += len(spec.get("tests", [])) + len(spec.get("variantTests", []))
    assert (len(files), total) == (22, 279)
