"""Imports from other flag systems: their exports converted into one flag document.

Each importer reads what its system exports and returns a `Conversion`: a flag document for
one environment, in which every flag keeps its system's bucketing scheme, and the flags that
cannot be expressed, each with its reason. Those are left out whole, never half-imported.
The document is then imported through `flags.transfer.import_document`, so the same plan,
dry run, validation, roles and audit entries apply as for a native import. See
docs/migrating.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError

from evaluation.engine import ErrorCode, compile_document
from flags import transfer
from flags.importers.conversion import Conversion
from flags.importers.flagd import convert_flagd
from flags.importers.flagsmith import convert_flagsmith
from flags.importers.launchdarkly import convert_launchdarkly
from flags.importers.unleash import convert_unleash

CONVERTERS: dict[str, Callable[[Any], Conversion]] = {
    "unleash": convert_unleash,
    "flagd": convert_flagd,
    "launchdarkly": convert_launchdarkly,
    "flagsmith": convert_flagsmith,
}
SOURCES = tuple(CONVERTERS)


def convert(source: str, data: Any) -> Conversion:
    """The flag document of another system's export; ValidationError if it is not one."""
    converter = CONVERTERS.get(source)
    if converter is None:
        raise ValidationError({"from": f"one of {', '.join(SOURCES)}, not {source!r}"})
    conversion = converter(data)
    _drop_what_the_engine_refuses(conversion)
    return conversion


def _drop_what_the_engine_refuses(conversion: Conversion) -> None:
    """Skip, with the reason, flags the engine cannot compile (a pattern RE2 refuses, ...)
    and flags whose prerequisites are skipped: the rest imports, never half a flag."""
    flags = conversion.document["flags"]
    names = {key: name for name, key in conversion.keys.items()}
    while True:
        snapshot = compile_document({**conversion.document, "version": 0})
        refused: dict[str, str] = {}
        for key, entry in flags.items():
            missing = [
                p["flag"] for p in entry.get("prerequisites") or [] if p["flag"] not in flags
            ]
            if missing:
                refused[key] = f"its prerequisite {missing[0]!r} is not imported"
                continue
            result = snapshot.evaluate(key, {"targetingKey": "import-check"})
            if result.error_code == ErrorCode.PARSE_ERROR:
                refused[key] = (result.error_details or "").removeprefix(f"flag {key!r}: ")
        if not refused:
            return
        for key, reason in refused.items():
            name = names.get(key, key)
            conversion.skipped[name] = reason
            conversion.keys.pop(name, None)
            del flags[key]


def import_from(
    *,
    source: str,
    data: Any,
    project_key: str | None,
    environment_key: str | None,
    existing: str = "skip",
    create_missing: bool = False,
    dry_run: bool = False,
    actor: Any,
    door: str,
) -> tuple[transfer.Plan, Conversion]:
    """Convert another system's export and import it into one environment, all or nothing."""
    conversion = convert(source, data)
    if not project_key:
        raise ValidationError({"project": f"an {source} export names no project here: give one"})
    if not environment_key:
        raise ValidationError(
            {"environment": f"an {source} export names no environment here: give one"}
        )
    document = {**conversion.document, "project": project_key, "environment": environment_key}
    plan = transfer.import_document(
        document=document,
        project_key=project_key,
        environment_key=environment_key,
        existing=existing,
        create_missing=create_missing,
        dry_run=dry_run,
        actor=actor,
        source=door,
    )
    return plan, conversion
