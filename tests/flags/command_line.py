"""Run `manage.py flags ...` in the test process and capture what it prints."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from django.core.management import CommandError, call_command


@dataclass
class Output:
    stdout: str
    stderr: str


def run(*args: str, stdin: str | None = None) -> Output:
    stdout, stderr = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command("flags", *args, stdout=stdout, stderr=stderr, **extra)
    return Output(stdout.getvalue(), stderr.getvalue())


def fails(*args: str, stdin: str | None = None, code: int = 2) -> str:
    """Run a command that must fail; return its error message."""
    with pytest.raises(CommandError) as error:
        run(*args, stdin=stdin)
    assert error.value.returncode == code, str(error.value)
    return str(error.value)
