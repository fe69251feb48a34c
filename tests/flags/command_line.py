"""Run `manage.py flags ...` (or another command) in the test process and capture what it
prints."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
from django.core.management import CommandError, call_command


@dataclass
class Output:
    stdout: str
    stderr: str


def run(*args: str, stdin: str | None = None, command: str = "flags") -> Output:
    stdout, stderr = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(command, *args, stdout=stdout, stderr=stderr, **extra)
    return Output(stdout.getvalue(), stderr.getvalue())


def fails(*args: str, stdin: str | None = None, code: int = 2, command: str = "flags") -> str:
    """Run a command that must fail; return its error message."""
    with pytest.raises(CommandError) as error:
        run(*args, stdin=stdin, command=command)
    assert error.value.returncode == code, str(error.value)
    return str(error.value)


class Command:
    """`manage.py NAME`: `.run(*args)` its output, `.fails(*args)` its error (exit code 2)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return run(*args, command=self.name).stdout

    def fails(self, *args: str) -> str:
        return fails(*args, command=self.name)
