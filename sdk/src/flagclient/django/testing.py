"""Test utilities: force a flag's value inside a block or a test, like waffle's override_flag.

with override_flag("new-checkout", True): ...

@override_flag("new-checkout", False)
def test_old_checkout(client): ...
"""

from __future__ import annotations

from contextlib import ContextDecorator, ExitStack
from typing import Any

from flagclient.django import get_client


class override_flag(ContextDecorator):  # noqa: N801 - used like a function, as in Django
    """Serve `value` for `flag_key` from the process's client (reason STATIC)."""

    def __init__(self, flag_key: str, value: Any) -> None:
        self.flag_key = flag_key
        self.value = value
        self._stack: list[ExitStack] = []

    def __enter__(self) -> override_flag:
        stack = ExitStack()
        stack.enter_context(get_client().override(self.flag_key, self.value))
        self._stack.append(stack)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.pop().close()
