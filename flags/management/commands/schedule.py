"""`manage.py schedule`: a flag's scheduled changes in an environment; start a stepped
rollout (with an optional guard); cancel a pending change.

Thin like every command: parse, call flags.schedules, print. Errors are one line on stderr
and exit code 2 (flags.cli).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flags import history, schedules
from flags.cli import (
    SOURCE,
    FlagsCommand,
    actor_named,
    add_common_arguments,
    add_config_arguments,
    add_guard_options,
    config_named,
    fail,
    tolerance_argument,
)
from flags.models import FlagConfig, ScheduledChange
from flags.roles import Action, authorize


def _first_step(text: str | None, now: datetime) -> datetime:
    """`--start` as typed: ISO 8601; without a zone, UTC."""
    if not text:
        return now
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"--start: a date and time like 2027-01-31T09:00 (UTC), not {text[:40]!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _guards(options: dict) -> list[dict]:
    if not options.get("guard"):
        for option in ("tolerance", "action_on_regression"):
            if options.get(option) is not None:
                raise fail(f"--{option.replace('_', '-')} is for a guard: give --guard METRIC")
        return []
    guard: dict[str, object] = {"metric": options["guard"]}
    if options.get("tolerance") is not None:
        guard["tolerance"] = tolerance_argument(options["tolerance"])
    if options.get("action_on_regression") is not None:
        guard["action"] = options["action_on_regression"]
    return [guard]


class Command(FlagsCommand):
    help = "List a flag's scheduled changes, start a stepped rollout, cancel a pending change."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = actions.add_parser("list", help="the scheduled changes, newest first")
        add_config_arguments(listing)
        listing.add_argument("--pending", action="store_true", help="only those still pending")
        add_common_arguments(listing)
        start = actions.add_parser(
            "rollout", help="start a stepped rollout: a growing share gets the variant"
        )
        add_config_arguments(start)
        start.add_argument("--variant", required=True, help="the variant to roll out")
        start.add_argument("--towards", help="what everyone else gets (default: the off variant)")
        start.add_argument(
            "--percentages", required=True, metavar="P,P,...", help="one step each: 5,25,50,100"
        )
        start.add_argument(
            "--every-hours", type=int, default=24, metavar="N", help="hours between steps (24)"
        )
        start.add_argument(
            "--start",
            metavar="ISO-DATETIME",
            help="the first step (UTC unless a zone is given; default now)",
        )
        start.add_argument("--bucket-by", default="targetingKey", metavar="ATTRIBUTE")
        start.add_argument(
            "--guard", metavar="METRIC", help="a guard metric checked before each step"
        )
        add_guard_options(
            start,
            tolerance_help="the guard's tolerance (0 to below 100)",
            action_help="the guard rolls back to the control (default) or only pauses",
        )
        add_common_arguments(start, json_output=False)
        cancel = actions.add_parser("cancel", help="cancel a pending scheduled change")
        add_config_arguments(cancel)
        cancel.add_argument("change", help="the change's id (`schedule list` shows them)")
        add_common_arguments(cancel, json_output=False)

    def handle(self, *args, action: str, flag: str, environment: str, **options) -> None:
        actor = actor_named(options.pop("as_user", None), options.pop("bypass_approval", None))
        config = config_named(flag, environment)
        if action == "list":
            authorize(actor, config.flag.project, Action.READ)
            return self._list(config, pending=options["pending"], as_json=options["json"])
        if action == "cancel":
            change = schedules.scheduled_change_for(config, options["change"])
            schedules.schedule_cancel(change=change, actor=actor, source=SOURCE)
            return self.stdout.write(f"Cancelled scheduled change #{change.pk}.")
        now = datetime.now(UTC)
        steps = schedules.steps_every(
            schedules.percentages_from_text(options["percentages"], "--percentages"),
            hours=options["every_hours"],
            first=_first_step(options.get("start"), now),
            now=now,
        )
        changes = schedules.rollout_create(
            config=config,
            variant=options["variant"],
            towards=options.get("towards"),
            bucket_by=options["bucket_by"],
            steps=steps,
            guards=_guards(options),
            actor=actor,
            source=SOURCE,
        )
        guarded = f", guarded by {options['guard']}" if options.get("guard") else ""
        self.stdout.write(
            f"Started rollout {changes[0].rollout} of {options['variant']}{guarded}: "
            f"{len(changes)} step{'s' if len(changes) != 1 else ''}."
        )
        for change in changes:
            self.stdout.write(self._line(change))

    @staticmethod
    def _line(change: ScheduledChange) -> str:
        return (
            f"#{change.pk} {change.run_at:%Y-%m-%d %H:%M} UTC: {history.change_text(change.data)}"
        )

    def _list(self, config: FlagConfig, *, pending: bool, as_json: bool) -> None:
        changes = list(schedules.schedule_of(config, pending_only=pending)[:200])
        if as_json:
            return self.print_json(
                [
                    {
                        "id": change.pk,
                        "at": change.run_at,
                        "status": change.status,
                        "rollout": change.rollout or None,
                        "data": change.data,
                        "error": change.error or None,
                        "by": change.created_by_name,
                    }
                    for change in changes
                ]
            )
        rows = [
            (
                change.pk,
                f"{change.run_at:%Y-%m-%d %H:%M}",
                change.status,
                change.rollout,
                history.change_text(change.data),
            )
            for change in changes
        ]
        self.print_table(rows, ["ID", "AT (UTC)", "STATUS", "ROLLOUT", "CHANGE"])
