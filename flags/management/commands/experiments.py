"""`manage.py experiments`: an experiment's results, and starting or stopping it.

Thin like every command: parse, call a service or the analysis, print. Errors are one line
on stderr and exit code 2 (flags.cli).
"""

from __future__ import annotations

from typing import Any

from flags import selectors, services
from flags.cli import SOURCE, FlagsCommand, actor_named, add_common_arguments, fail
from flags.errors import NotFound
from flags.experiment_results import results_context
from flags.models import Experiment
from flags.roles import Action, authorize


def experiment_named(reference: str) -> Experiment:
    """An experiment from `PROJECT/EXPERIMENT`."""
    project_key, _, key = reference.partition("/")
    if not project_key or not key:
        raise fail(f"name an experiment as PROJECT/EXPERIMENT, not {reference!r}")
    project = selectors.project_named(project_key)
    experiment = (
        Experiment.objects.filter(project=project, key=key)
        .select_related("project", "flag", "environment")
        .first()
    )
    if experiment is None:
        raise NotFound("experiment", key, within=f"project {project.key!r}")
    return experiment


class Command(FlagsCommand):
    help = "Show an experiment's results; start or stop it."

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        results = actions.add_parser("results", help="each metric's results per variant")
        results.add_argument("experiment", metavar="PROJECT/EXPERIMENT")
        add_common_arguments(results)
        for action, text in (("start", "start counting units now"), ("stop", "stop counting")):
            sub = actions.add_parser(action, help=text)
            sub.add_argument("experiment", metavar="PROJECT/EXPERIMENT")
            add_common_arguments(sub, json_output=False)

    def handle(self, *args, action: str, experiment: str, **options) -> None:
        actor = actor_named(options.pop("as_user", None), options.pop("bypass_approval", None))
        found = experiment_named(experiment)
        if action == "results":
            authorize(actor, found.project, Action.READ)
            return self._results(found, as_json=options.get("json", False))
        write = services.experiment_start if action == "start" else services.experiment_stop
        done = write(experiment=found, actor=actor, source=SOURCE)
        self.stdout.write(f"{found.project.key}/{found.key} is {done.status}.")

    def _results(self, experiment: Experiment, *, as_json: bool) -> None:
        results = results_context(experiment)
        if results is None:
            raise fail(f"{experiment.project.key}/{experiment.key} has not started: no results")
        if as_json:
            return self.print_json(_as_json(experiment, results))
        ratio = results["sample_ratio"]
        if ratio["mismatch"]:
            self.stderr.write(
                f"SAMPLE RATIO MISMATCH: do not trust these results. Units split "
                f"{ratio['observed']}, the weights at the start ({ratio['weights']}) expect "
                f"{ratio['expected']} (p = {ratio['p_value']})."
            )
        for change in results["changes"]:
            self.stderr.write(
                f"Split changed while running: {change.at:%Y-%m-%d %H:%M} UTC, version "
                f"{change.version} by {change.actor}: {'; '.join(change.changes)}"
            )
        if results["analysis"].mixed_units:
            self.stdout.write(
                f"{results['analysis'].mixed_units} units saw two variants: left out."
            )
        for table in results["metrics"]:
            self.stdout.write(f"\n{table['metric'].name} ({table['measure']})")
            self.print_table(
                [
                    (
                        row["variant"] + (" (control)" if row["control"] else ""),
                        row["units"],
                        row["value"],
                        "" if row["control"] else row["lift"],
                        row["p_value"],
                        row["chance"],
                    )
                    for row in table["rows"]
                ],
                ["VARIANT", "UNITS", "VALUE", "RELATIVE LIFT (95% CI)", "P-VALUE", "CHANCE"],
            )
            for reason in table["reasons"]:
                self.stdout.write(reason[:1].upper() + reason[1:] + ".")


def _as_json(experiment: Experiment, results: dict[str, Any]) -> dict[str, Any]:
    analysis = results["analysis"]
    ratio = analysis.sample_ratio
    return {
        "experiment": f"{experiment.project.key}/{experiment.key}",
        "status": experiment.status,
        "start": analysis.start,
        "stop": analysis.stop,
        "units": analysis.units,
        "mixedUnits": analysis.mixed_units,
        "sampleRatio": {"pValue": ratio.p_value, "mismatch": ratio.mismatch},
        "changes": [
            {"version": c.version, "at": c.at, "actor": c.actor, "changes": c.changes}
            for c in analysis.changes
        ],
        "metrics": {
            result.metric.key: [
                {
                    "variant": row.variant,
                    "units": row.units,
                    "value": row.value,
                    "relativeLift": row.comparison.relative_lift if row.comparison else None,
                    "interval": [row.comparison.interval.low, row.comparison.interval.high]
                    if row.comparison and row.comparison.interval
                    else None,
                    "pValue": row.comparison.p_value if row.comparison else None,
                    "chanceToBeatControl": row.comparison.chance_to_beat_control
                    if row.comparison
                    else None,
                    "reasons": list(row.comparison.reasons) if row.comparison else [],
                }
                for row in result.rows
            ]
            for result in analysis.metrics
        },
    }
