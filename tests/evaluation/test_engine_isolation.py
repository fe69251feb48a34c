"""The engine must import and evaluate where Django cannot be imported at all."""

from __future__ import annotations

from tests.without_django import ROOT, run_without_django

EVALUATE = """
from evaluation.engine import compile_document

document = {
    "flags": {
        "f": {
            "type": "boolean",
            "enabled": True,
            "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "offVariant": "off",
            "rules": [
                {
                    "id": "1",
                    "conditions": [{"attribute": "plan", "operator": "equals", "values": ["pro"]}],
                    "serve": {"variant": "on"},
                }
            ],
            "defaultServe": {"variant": "off"},
        }
    }
}
snapshot = compile_document(document)
assert snapshot.evaluate("f", {"plan": "pro"}).value is True
assert snapshot.evaluate("f", {"plan": "free"}).value is False
assert not any(name == "django" or name.startswith("django.") for name in sys.modules)
print("engine ok without django")
"""


def test_the_engine_imports_and_evaluates_without_django() -> None:
    run = run_without_django(EVALUATE)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "engine ok without django"


def test_the_evaluation_package_itself_imports_nothing() -> None:
    assert (ROOT / "evaluation" / "__init__.py").read_text().strip() == ""
