"""Fixtures of the integration tests: real receivers, the documented verification code."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integrations.receivers import Receiver

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


@pytest.fixture
def receivers():
    """Make receivers with `receivers(statuses=[500], hang=False)`; all closed at the end."""
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture(scope="session")
def documented_verify() -> Callable[[str, dict, bytes], bool]:
    """The receiver-side check exactly as docs/integrations.md prints it."""
    text = DOCS.read_text()
    section = text.split("### Verifying a delivery", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify"]
