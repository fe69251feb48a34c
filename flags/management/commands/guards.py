"""`manage.py guards`: list, add, edit and remove the guards of a flag's stepped rollouts.

Thin like every command: parse, call flags.guards, print. Errors are one line on stderr and
exit code 2 (flags.cli).
"""

from __future__ import annotations

from flags import guards
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
from flags.models import FlagConfig, RolloutGuard
from flags.roles import Action, authorize


def _changes(options: dict) -> dict:
    data: dict[str, object] = {}
    if options.get("metric") is not None:
        data["metric"] = options["metric"]
    if options.get("tolerance") is not None:
        data["tolerance"] = tolerance_argument(options["tolerance"])
    if options.get("action_on_regression") is not None:
        data["action"] = options["action_on_regression"]
    return data


GUARD_HELP = {
    "tolerance_help": "how much worse is tolerated (0 to below 100)",
    "action_help": "roll back to the control (default) or only pause",
}


class Command(FlagsCommand):
    help = "List, add, edit and remove the guard metrics of a flag's stepped rollouts."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        listing = actions.add_parser("list", help="each guard with its state")
        add_config_arguments(listing)
        add_common_arguments(listing)
        add = actions.add_parser("add", help="add a guard to a rollout with steps pending")
        add_config_arguments(add)
        add.add_argument("rollout", help="the rollout's id (`guards list` shows them)")
        add.add_argument("--metric", required=True, help="the key of a metric of the project")
        add_guard_options(add, **GUARD_HELP)
        add_common_arguments(add, json_output=False)
        edit = actions.add_parser(
            "edit", help="change a running guard (a new metric or tolerance restarts its test)"
        )
        add_config_arguments(edit)
        edit.add_argument("guard", help="the guard's id")
        edit.add_argument("--metric", help="the key of a metric of the project")
        add_guard_options(edit, **GUARD_HELP)
        add_common_arguments(edit, json_output=False)
        remove = actions.add_parser("remove", help="remove a guard; its rollout goes on")
        add_config_arguments(remove)
        remove.add_argument("guard", help="the guard's id")
        add_common_arguments(remove, json_output=False)

    def handle(self, *args, action: str, flag: str, environment: str, **options) -> None:
        actor = actor_named(options.pop("as_user", None), options.pop("bypass_approval", None))
        config = config_named(flag, environment)
        if action == "list":
            authorize(actor, config.flag.project, Action.READ)
            return self._list(config, as_json=options.get("json", False))
        if action == "add":
            guard = guards.guard_create(
                config=config,
                rollout=options["rollout"],
                data=_changes(options),
                actor=actor,
                source=SOURCE,
            )
            return self.stdout.write(f"Added guard #{guard.pk}: {self._line(guard)}")
        guard = guards.guard_for(config, options["guard"])
        if action == "remove":
            guards.guard_delete(guard=guard, actor=actor, source=SOURCE)
            return self.stdout.write(f"Removed guard #{guard.pk} of rollout {guard.rollout}.")
        data = _changes(options)
        if not data:
            raise fail("edit: give --metric, --tolerance or --on-regression")
        updated = guards.guard_update(guard=guard, data=data, actor=actor, source=SOURCE)
        restarted = updated.restarted_at is not None and updated.restarted_at != guard.restarted_at
        self.stdout.write(f"Changed guard #{updated.pk}: {self._line(updated)}")
        if restarted:
            self.stdout.write("Its test restarted now: it counts units first exposed from now on.")

    @staticmethod
    def _line(guard: RolloutGuard) -> str:
        return (
            f"{guard.metric.key} on rollout {guard.rollout} ({guard.treatment_variant} against "
            f"{guard.control_variant}), tolerance {guard.tolerance:g}%, on a regression "
            f"{guard.get_action_display()}"
        )

    def _list(self, config: FlagConfig, *, as_json: bool) -> None:
        found = list(guards.guards_of(config))
        if as_json:
            return self.print_json(
                [
                    {
                        "id": guard.pk,
                        "rollout": guard.rollout,
                        "metric": guard.metric.key,
                        "tolerance": guard.tolerance,
                        "action": guard.action,
                        "status": guard.status,
                        "control": guard.control_variant,
                        "treatment": guard.treatment_variant,
                        "checkedAt": guard.checked_at,
                        "pValue": guard.p_value,
                        "restartedAt": guard.restarted_at,
                        "state": guards.guard_state(guard),
                    }
                    for guard in found
                ]
            )
        if not found:
            self.stdout.write(f"No guards on {config.flag.key} in {config.environment.key}.")
        else:
            self.print_table(
                [
                    (
                        guard.pk,
                        guard.rollout,
                        guard.metric.key,
                        f"{guard.tolerance:g}%",
                        guard.action,
                        guard.status,
                        guards.guard_state(guard),
                    )
                    for guard in found
                ],
                ["ID", "ROLLOUT", "METRIC", "TOLERANCE", "ON REGRESSION", "STATUS", "STATE"],
            )
        running = guards.running_rollouts(config)
        for item in running:
            self.stdout.write(
                f"Rollout {item['rollout']}: {item['treatment']} against {item['control']}, "
                f"{item['pending']} step{'s' if item['pending'] > 1 else ''} pending."
            )
