"""What every command-line door shares: `--as` and `--json`, lookups, tables, error translation.

Commands stay thin: parse, call a service, print. Domain errors raised by the services
(ValidationError with field names, PermissionDenied, ConflictError) become one line on
stderr and exit code 2, like every other bad input. Arguments and the JSON or YAML they
name are checked like an API body first (flags.validation: no NUL, no lone surrogate, not
nested too deep).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from evaluation.engine import DocumentError
from flags import selectors
from flags.errors import NotFound
from flags.models import Flag, FlagConfig, RolloutGuard
from flags.roles import Operator
from flags.services import ConflictError
from flags.validation import find_text_problem, load_json

EXIT_BAD_INPUT = 2
SOURCE = "cli"


def fail(message: str) -> CommandError:
    """An error to raise: printed on stderr, exit code 2."""
    return CommandError(message, returncode=EXIT_BAD_INPUT)


def describe_validation_error(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(
            f"{name}: {message}"
            for name, messages in error.message_dict.items()
            for message in messages
        )
    return "; ".join(error.messages)


@contextmanager
def translated_errors():
    """Turn the services' domain exceptions into command errors (exit code 2)."""
    try:
        yield
    except ValidationError as error:
        raise fail(f"invalid input: {describe_validation_error(error)}") from error
    except PermissionDenied as error:
        raise fail(f"permission denied: {error}") from error
    except ConflictError as error:
        raise fail(f"conflict: {error}") from error
    except DocumentError as error:
        raise fail(f"invalid document: {error}") from error
    except NotFound as error:
        raise fail(not_found_text(error)) from error


def not_found_text(error: NotFound) -> str:
    known = f" (one of: {', '.join(error.known)})" if error.known else ""
    return f"unknown {error.subject}{known}"


def add_common_arguments(parser, *, json_output: bool = True) -> None:
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USERNAME",
        help="act as this user: their roles apply and audit entries name them",
    )
    parser.add_argument(
        "--bypass-approval",
        dest="bypass_approval",
        metavar="REASON",
        help="as an operator (without --as), write where a change request would be needed; "
        "the reason is recorded in the audit log with the change",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def actor_named(username: str | None, bypass_reason: str | None = None):
    """The user named by `--as`; without it, the operator at the shell.

    An operator passes the role checks, not the approvals: `--bypass-approval REASON` is the
    one way around those, and it is audited.
    """
    if bypass_reason is not None and not bypass_reason.strip():
        raise fail("--bypass-approval needs a reason, e.g. --bypass-approval 'incident 42'")
    if not username:
        return Operator(bypass_reason=(bypass_reason or "").strip()[:500])
    if bypass_reason is not None:
        raise fail("--bypass-approval is for operators: leave out --as (people ask for approval)")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise fail(f"unknown user {username!r}")
    if not user.is_active:
        raise fail(f"user {username!r} is inactive")
    return user


def split_flag_reference(reference: str) -> tuple[str, str]:
    project_key, _, flag_key = reference.partition("/")
    if not project_key or not flag_key:
        raise fail(f"name a flag as PROJECT/FLAG, not {reference!r}")
    return project_key, flag_key


def flag_named(reference: str) -> Flag:
    """A flag from `PROJECT/FLAG`."""
    project_key, flag_key = split_flag_reference(reference)
    return selectors.flag_for(selectors.project_named(project_key), flag_key)


def parse_json(text: str, what: str) -> Any:
    """JSON from an argument or a file, with the store's limits (flags.validation)."""
    try:
        return load_json(text, "")
    except ValidationError as error:
        path, [first] = next(iter(error.error_dict.items()))
        if first.code == "invalid":
            reason = first.message.removeprefix("not valid JSON: ")
            raise fail(f"invalid JSON in {what}: {reason}") from None
        raise fail(_problem_in(what, path, str(first.message))) from None


def check_loaded(value: Any, what: str) -> Any:
    """A document read some other way (YAML) with the same limits as `parse_json`."""
    found = find_text_problem(value)
    if found is not None:
        raise fail(_problem_in(what, *found))
    return value


def check_arguments(options: dict[str, Any]) -> None:
    """Arguments as typed: bytes that are not UTF-8 come in as lone surrogates."""
    for name, value in options.items():
        if isinstance(value, str | list | tuple):
            found = find_text_problem(value)
            if found is not None:
                raise fail(f"{name}: {found[1]}")


def add_config_arguments(parser) -> None:
    """A flag's configuration in an environment: `PROJECT/FLAG ENVIRONMENT`."""
    parser.add_argument("flag", metavar="PROJECT/FLAG")
    parser.add_argument("environment")


def config_named(flag: str, environment: str) -> FlagConfig:
    found = flag_named(flag)
    return selectors.config_for(found, selectors.environment_for(found.project, environment))


def add_guard_options(parser, *, tolerance_help: str, action_help: str) -> None:
    """A guard's `--tolerance PERCENT` and `--on-regression rollback|pause`."""
    parser.add_argument("--tolerance", metavar="PERCENT", help=tolerance_help)
    parser.add_argument(
        "--on-regression",
        dest="action_on_regression",
        choices=RolloutGuard.Action.values,
        help=action_help,
    )


def tolerance_argument(text: str, option: str = "--tolerance") -> float:
    """A guard's tolerance as typed; its range is the service's to check, like the API's."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise fail(f"{option}: a percentage from 0 to below 100, not {text[:40]!r}")
    return value


def _problem_in(what: str, path: str, problem: str) -> str:
    return f"{what}: {path}: {problem}" if path else f"{what}: {problem}"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain text table with left-aligned columns."""
    cells = [[str(header) for header in headers]] + [
        ["" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[index]) for row in cells) for index in range(len(headers))]
    lines = ("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


class AttributesParser(CommandParser):
    """A parser that also takes `NAME=VALUE` words placed after options into `attributes`.

    argparse fills a trailing `nargs="*"` positional only from the words before the first
    option; `evaluate demo/f prod --type string plan=pro` should work all the same.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if hasattr(namespace, "attributes"):
            words = [word for word in extras if "=" in word and not word.startswith("-")]
            namespace.attributes = [*(namespace.attributes or []), *words]
            extras = [word for word in extras if word not in words]
        return namespace, extras


class FlagsCommand(BaseCommand):
    """A command whose handler runs with domain errors translated to exit code 2."""

    def execute(self, *args, **options):
        with translated_errors():
            check_arguments(options)
            return super().execute(*args, **options)

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def print_table(self, rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> None:
        self.stdout.write(table(rows, headers))
