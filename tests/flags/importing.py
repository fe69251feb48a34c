"""Import another system's export into a fresh shop/production and compile what was stored."""

from __future__ import annotations

from typing import Any

from evaluation.documents import build_document
from evaluation.engine import Snapshot, compile_document
from flags.importers import import_from
from flags.importers.conversion import Conversion
from tests import factories


def import_and_compile(
    source: str, data: Any, project_key: str = "shop"
) -> tuple[Snapshot, Conversion]:
    """The snapshot built from the store after importing `data`, and the conversion report.

    The answers come from the document the store gives back, not from the conversion: what a
    user gets is what was written.
    """
    project = factories.project(project_key)
    factories.environment(project, "production")
    _, conversion = import_from(
        source=source,
        data=data,
        project_key=project.key,
        environment_key="production",
        actor=None,
        door="system",
    )
    document = build_document(project.environments.get(key="production").pk)
    return compile_document(document), conversion
