"""`manage.py flags SUBCOMMAND`: the developer's command line (docs/cli.md)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from evaluation import cache
from evaluation.engine import Reason
from flags import importers, services, transfer
from flags.cli import (
    SOURCE,
    AttributesParser,
    FlagsCommand,
    actor_named,
    add_common_arguments,
    check_loaded,
    fail,
    flag_named,
    parse_json,
    split_flag_reference,
)
from flags.errors import NotFound
from flags.models import ApiKey, Flag, FlagConfig
from flags.roles import Action, authorize, visible_projects
from flags.selectors import config_for, environment_for, project_named
from flags.validation import DEPTH_MESSAGE

FORMATS = ("json", "yaml")
# Imports of more flags than this report their progress on stderr: the first and last flag,
# then every PROGRESS_EVERY flags or PROGRESS_SECONDS, whichever comes first.
PROGRESS_FROM = 20
PROGRESS_EVERY = 500
PROGRESS_SECONDS = 1.0
# The largest export of another system that `import --from` reads.
MAX_EXPORT_BYTES = 50_000_000


class Command(FlagsCommand):
    help = "Manage projects, flags, API keys; evaluate, export, import and promote flags."
    stealth_options = ("stdin",)
    _progress_at = 0.0  # when the import's last progress line was written

    def add_arguments(self, parser) -> None:
        commands = parser.add_subparsers(
            dest="subcommand", metavar="SUBCOMMAND", required=True, parser_class=AttributesParser
        )
        for name in SUBCOMMANDS:
            getattr(self, f"_args_{name}")(commands)

    def handle(self, *args, subcommand: str, **options) -> None:
        self.actor = actor_named(options.pop("as_user", None), options.pop("bypass_approval", None))
        self.as_json = options.pop("json", False)
        getattr(self, f"_{subcommand.replace('-', '_')}")(**options)

    # --- listing ------------------------------------------------------------------------

    def _args_projects(self, commands) -> None:
        add_common_arguments(commands.add_parser("projects", help="list projects"))

    def _projects(self, **options) -> None:
        projects = visible_projects(self.actor)
        rows = [
            {
                "key": p.key,
                "name": p.name,
                "environments": list(p.environments.values_list("key", flat=True)),
                "flags": p.flags.count(),
            }
            for p in projects
        ]
        if self.as_json:
            return self.print_json(rows)
        self.print_table(
            [(r["key"], r["name"], ", ".join(r["environments"]), r["flags"]) for r in rows],
            ["KEY", "NAME", "ENVIRONMENTS", "FLAGS"],
        )

    def _args_environments(self, commands) -> None:
        sub = commands.add_parser("environments", help="list a project's environments")
        sub.add_argument("project")
        add_common_arguments(sub)

    def _environments(self, *, project: str, **options) -> None:
        project = self._readable(project)
        rows = [
            {"key": e.key, "name": e.name, "protected": e.protected, "version": e.version}
            for e in project.environments.all()
        ]
        if self.as_json:
            return self.print_json(rows)
        self.print_table(
            [(r["key"], r["name"], "yes" if r["protected"] else "", r["version"]) for r in rows],
            ["KEY", "NAME", "PROTECTED", "VERSION"],
        )

    def _args_list(self, commands) -> None:
        sub = commands.add_parser("list", help="list a project's flags and where they are on")
        sub.add_argument("project")
        sub.add_argument("--archived", action="store_true", help="include archived flags")
        add_common_arguments(sub)

    def _list(self, *, project: str, archived: bool, **options) -> None:
        project = self._readable(project)
        environments = list(project.environments.all())
        flags = project.flags.prefetch_related("tags").order_by("key")
        if not archived:
            flags = flags.filter(archived=False)
        configs = {
            (c.flag_id, c.environment_id): c
            for c in FlagConfig.objects.filter(flag__project=project)
        }
        rows = [_flag_row(flag, environments, configs) for flag in flags]
        if self.as_json:
            return self.print_json(rows)
        self.print_table(
            [
                (
                    r["key"] + (" (archived)" if r["archived"] else ""),
                    r["type"],
                    *(r["environments"][e.key]["summary"] for e in environments),
                )
                for r in rows
            ],
            ["FLAG", "TYPE", *(e.key.upper() for e in environments)],
        )

    def _args_show(self, commands) -> None:
        sub = commands.add_parser("show", help="print a flag's document entry in an environment")
        sub.add_argument("flag", metavar="PROJECT/FLAG")
        sub.add_argument("environment")
        add_common_arguments(sub, json_output=False)

    def _show(self, *, flag: str, environment: str, **options) -> None:
        flag = flag_named(flag)
        environment = environment_for(self._readable(flag.project.key), environment)
        document = transfer.export_environment(environment=environment, actor=self.actor)
        self.print_json(document["flags"][flag.key])

    # --- flags --------------------------------------------------------------------------

    def _args_create(self, commands) -> None:
        sub = commands.add_parser("create", help="create a flag (off in every environment)")
        sub.add_argument("flag", metavar="PROJECT/FLAG")
        sub.add_argument("--type", default=Flag.Type.BOOLEAN, choices=Flag.Type.values)
        sub.add_argument(
            "--variants",
            help='JSON: [{"key": "a", "value": ...}, ...] or {"a": VALUE, ...}; '
            "boolean flags get on/off",
        )
        sub.add_argument("--name", default="")
        sub.add_argument("--description", default="")
        sub.add_argument("--tag", dest="tags", action="append", default=[], help="repeatable")
        sub.add_argument(
            "--client-side",
            action="store_true",
            help="make it available to client-side keys (browsers, mobile apps)",
        )
        add_common_arguments(sub)

    def _create(self, *, flag: str, type: str, variants: str | None, **options) -> None:
        project_key, key = split_flag_reference(flag)
        created = services.flag_create(
            project=project_named(project_key),
            key=key,
            name=options["name"],
            type=type,
            variants=_variants(variants) if variants else None,
            description=options["description"],
            tags=options["tags"],
            client_side=options["client_side"],
            actor=self.actor,
            source=SOURCE,
        )
        if self.as_json:
            return self.print_json(_flag_json(created))
        keys = ", ".join(created.variants.values_list("key", flat=True))
        self._done(f"Created {type} flag {project_key}/{key} (variants: {keys}), off everywhere.")

    def _args_archive(self, commands) -> None:
        sub = commands.add_parser("archive", help="archive a flag (it stops being served)")
        sub.add_argument("flag", metavar="PROJECT/FLAG")
        sub.add_argument("--undo", action="store_true", help="bring an archived flag back")
        add_common_arguments(sub, json_output=False)

    def _archive(self, *, flag: str, undo: bool, **options) -> None:
        flag = flag_named(flag)
        services.flag_update(
            flag=flag, data={"archived": not undo}, actor=self.actor, source=SOURCE
        )
        self._done(f"{'Restored' if undo else 'Archived'} {flag.project.key}/{flag.key}.")

    # --- a flag in an environment -------------------------------------------------------

    def _args_toggle(self, commands) -> None:
        sub = commands.add_parser("toggle", help="turn a flag on or off in an environment")
        _flag_in_environment(sub)
        sub.add_argument("state", choices=("on", "off"))
        add_common_arguments(sub, json_output=False)

    def _toggle(self, *, flag: str, environment: str, state: str, **options) -> None:
        config = _config(flag, environment)
        services.flag_toggle(config=config, enabled=state == "on", actor=self.actor, source=SOURCE)
        self._done(f"{config.flag.key} is {state} in {config.environment.key}.")

    def _args_rollout(self, commands) -> None:
        sub = commands.add_parser(
            "rollout", help="serve a percentage rollout by default in an environment"
        )
        _flag_in_environment(sub)
        sub.add_argument(
            "weights",
            nargs="+",
            metavar="WEIGHT",
            help="PERCENT (boolean flags: the share served on) or VARIANT=PERCENT ...",
        )
        sub.add_argument("--bucket-by", default="targetingKey", metavar="ATTRIBUTE")
        add_common_arguments(sub, json_output=False)

    def _rollout(self, *, flag: str, environment: str, weights: list, bucket_by: str, **o):
        config = _config(flag, environment)
        variants = _weights(config.flag, weights)
        rollout = {"bucketBy": bucket_by, "variants": variants}
        services.flag_config_update(
            config=config,
            data={"defaultServe": {"rollout": rollout}},
            actor=self.actor,
            source=SOURCE,
        )
        split = ", ".join(f"{v['variant']} {v['weight']}%" for v in variants)
        self._done(f"{config.flag.key} in {config.environment.key} now serves {split}.")

    def _args_serve(self, commands) -> None:
        sub = commands.add_parser("serve", help="serve one variant by default in an environment")
        _flag_in_environment(sub)
        sub.add_argument("variant")
        add_common_arguments(sub, json_output=False)

    def _serve(self, *, flag: str, environment: str, variant: str, **options) -> None:
        config = _config(flag, environment)
        services.flag_config_update(
            config=config,
            data={"defaultServe": {"variant": variant}},
            actor=self.actor,
            source=SOURCE,
        )
        self._done(f"{config.flag.key} in {config.environment.key} now serves {variant}.")

    def _args_target(self, commands) -> None:
        sub = commands.add_parser("target", help="serve a variant to individual targeting keys")
        _flag_in_environment(sub)
        sub.add_argument("variant")
        sub.add_argument("keys", nargs="+", metavar="TARGETING_KEY")
        sub.add_argument("--remove", action="store_true", help="remove the keys instead")
        add_common_arguments(sub, json_output=False)

    def _target(self, *, flag: str, environment: str, variant: str, keys: list, remove: bool, **o):
        config = _config(flag, environment)
        change = {"remove": keys} if remove else {"add": keys}
        services.flag_targets_change(
            config=config, variant=variant, actor=self.actor, source=SOURCE, **change
        )
        verb = "no longer get" if remove else "now get"
        self._done(f"{len(keys)} key(s) {verb} {variant} of {config.flag.key} in {environment}.")

    # --- evaluation ---------------------------------------------------------------------

    def _args_evaluate(self, commands) -> None:
        sub = commands.add_parser(
            "evaluate", help="evaluate a flag for a context with the server's engine"
        )
        _flag_in_environment(sub)
        sub.add_argument(
            "attributes",
            nargs="*",
            metavar="ATTRIBUTE=VALUE",
            help="context attributes: NAME=TEXT, or NAME:=JSON for numbers, booleans, lists",
        )
        sub.add_argument("--context", help="the context as a JSON object")
        sub.add_argument("--context-file", help="a file holding the context as JSON ('-': stdin)")
        sub.add_argument("--type", dest="expected_type", help="the type the caller expects")
        add_common_arguments(sub)

    def _evaluate(self, *, flag: str, environment: str, attributes: list, **options) -> None:
        flag = flag_named(flag)
        environment = environment_for(self._readable(flag.project.key), environment)
        context = self._context(options["context"], options["context_file"], attributes)
        snapshot = cache.snapshot(environment.pk)
        if snapshot is None:  # removed since it was looked up
            raise NotFound("environment", environment.key, within=f"project {flag.project.key!r}")
        result = snapshot.evaluate(flag.key, context, options["expected_type"])
        if self.as_json:
            self.print_json(result.to_dict())
        else:
            reason = result.reason + (f" (rule {result.rule_id})" if result.rule_id else "")
            self.stdout.write(f"value:   {json.dumps(result.value, ensure_ascii=False)}")
            self.stdout.write(f"variant: {result.variant or '-'}")
            self.stdout.write(f"reason:  {reason}")
            if result.error_code:
                self.stdout.write(f"error:   {result.error_code}: {result.error_details}")
        if result.reason == Reason.ERROR:
            raise CommandError(f"evaluation failed: {result.error_code}", returncode=1)

    def _context(self, text: str | None, path: str | None, attributes: list) -> dict:
        if text and path:
            raise fail("give --context or --context-file, not both")
        context: Any = {}
        if text:
            context = parse_json(text, "--context")
        elif path:
            context = parse_json(_read(path, self._stdin), f"--context-file {path}")
        if not isinstance(context, dict):
            raise fail("the context must be a JSON object")
        for attribute in attributes:
            name, value = _attribute(attribute)
            context[name] = value
        return context

    # --- API keys -----------------------------------------------------------------------

    def _args_keys(self, commands) -> None:
        sub = commands.add_parser("keys", help="create, list and revoke API keys")
        keys = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
        create = keys.add_parser("create", help="create a key; its secret is printed once")
        create.add_argument("project")
        create.add_argument("environment")
        create.add_argument("--kind", choices=ApiKey.Kind.values, default=ApiKey.Kind.SERVER)
        create.add_argument("--name", required=True)
        create.add_argument("--expires", help="ISO date and time, e.g. 2026-01-31T00:00:00Z")
        add_common_arguments(create)
        listing = keys.add_parser("list", help="list a project's keys (never their secrets)")
        listing.add_argument("project")
        listing.add_argument("environment", nargs="?")
        listing.add_argument("--revoked", action="store_true", help="include revoked keys")
        add_common_arguments(listing)
        revoke = keys.add_parser("revoke", help="revoke a key by its prefix or id")
        revoke.add_argument("key", metavar="PREFIX_OR_ID")
        add_common_arguments(revoke, json_output=False)

    def _keys(self, *, action: str, **options) -> None:
        getattr(self, f"_keys_{action}")(**options)

    def _keys_create(self, *, project: str, environment: str, kind: str, name: str, **options):
        environment = environment_for(project_named(project), environment)
        key, secret = services.api_key_create(
            environment=environment,
            kind=kind,
            name=name,
            expires_at=_datetime(options["expires"]) if options["expires"] else None,
            actor=self.actor,
            source=SOURCE,
        )
        if self.as_json:
            return self.print_json({**_key_row(key), "secret": secret})
        self.stdout.write(secret)
        self.stderr.write(
            f"Created {kind} key {name!r} ({key.prefix}…) for {environment}. "
            "The secret above is shown only this once: store it now."
        )

    def _keys_list(self, *, project: str, environment: str | None, revoked: bool, **options):
        project = project_named(project)
        authorize(self.actor, project, Action.ADMINISTER)
        keys = ApiKey.objects.filter(environment__project=project).select_related("environment")
        if environment:
            keys = keys.filter(environment=environment_for(project, environment))
        if not revoked:
            keys = keys.filter(revoked_at__isnull=True)
        rows = [_key_row(key) for key in keys]
        if self.as_json:
            return self.print_json(rows)
        self.print_table(
            [
                (
                    r["id"],
                    r["prefix"] + "…",
                    r["kind"],
                    r["environment"],
                    r["name"],
                    r["created_at"][:16],
                    (r["expires_at"] or "")[:16],
                    (r["last_used_at"] or "")[:16],
                    "revoked" if r["revoked_at"] else "",
                )
                for r in rows
            ],
            ["ID", "PREFIX", "KIND", "ENV", "NAME", "CREATED", "EXPIRES", "LAST USED", ""],
        )

    def _keys_revoke(self, *, key: str, **options) -> None:
        api_key = _api_key(key)
        services.api_key_revoke(key=api_key, actor=self.actor, source=SOURCE)
        self._done(f"Revoked key {api_key.name!r} ({api_key.prefix}…) of {api_key.environment}.")

    # --- secure mode (docs/security.md) ---------------------------------------------------

    def _args_secure_mode(self, commands) -> None:
        sub = commands.add_parser(
            "secure-mode",
            help="switch an environment's secure mode, or make its secret (printed once)",
        )
        sub.add_argument("project")
        sub.add_argument("environment")
        sub.add_argument("action", choices=("on", "off", "new-secret"))
        add_common_arguments(sub, json_output=False)

    def _secure_mode(self, *, project: str, environment: str, action: str, **options) -> None:
        environment = environment_for(project_named(project), environment)
        if action == "new-secret":
            environment, secret = services.environment_secure_mode_secret_rotate(
                environment=environment, actor=self.actor, source=SOURCE
            )
            self.stdout.write(secret)
            self.stderr.write(
                f"New secure mode secret ({services.secure_mode_secret_prefix(environment)}…) "
                f"for {environment}; the previous one no longer verifies. The secret above is "
                "shown only this once: give it to your servers now."
            )
            return
        services.environment_update(
            environment=environment,
            data={"secure_mode": action == "on"},
            actor=self.actor,
            source=SOURCE,
        )
        self._done(f"Secure mode is {action} for {environment}.")

    # --- export, import, promote --------------------------------------------------------

    def _args_export(self, commands) -> None:
        sub = commands.add_parser(
            "export", help="write an environment's (or a project's) flag document"
        )
        sub.add_argument("project")
        sub.add_argument("environment", nargs="?", help="leave out to export every environment")
        sub.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
        sub.add_argument("--format", choices=FORMATS, help="default: from FILE's suffix, or json")
        add_common_arguments(sub, json_output=False)

    def _export(self, *, project: str, environment: str | None, output: str | None, **options):
        project = project_named(project)
        if environment:
            env = environment_for(project, environment)
            document = transfer.export_environment(environment=env, actor=self.actor)
        else:
            document = transfer.export_project(project=project, actor=self.actor)
        text = _dump(document, options["format"] or _format_of(output))
        if not output or output == "-":
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise fail(f"cannot write {output}: {error.strerror}") from error
        what = f"{project.key}/{environment}" if environment else f"project {project.key}"
        self.stderr.write(f"Exported {what} to {output}.")

    def _args_import(self, commands) -> None:
        sub = commands.add_parser("import", help="import an export file, all or nothing")
        sub.add_argument("file", help="an export file ('-': stdin)")
        sub.add_argument("project", nargs="?", help="default: the project named in the file")
        sub.add_argument("environment", nargs="?", help="default: the file's environment(s)")
        sub.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
        sub.add_argument(
            "--existing",
            choices=transfer.EXISTING,
            default="skip",
            help="what to do with flags and segments that exist already (default: skip)",
        )
        sub.add_argument(
            "--create-missing",
            action="store_true",
            help="create the project and environments the file names if they do not exist",
        )
        sub.add_argument("--format", choices=FORMATS, help="default: from FILE's suffix, or json")
        sub.add_argument(
            "--from",
            dest="source",
            choices=importers.SOURCES,
            help="FILE is another system's export (see docs/migrating.md); give the project "
            "and environment to import into",
        )
        add_common_arguments(sub)

    def _import(self, *, file: str, project: str | None, environment: str | None, **options):
        if options["source"]:
            return self._import_from(file, project, environment, options)
        document = _load(_read(file, self._stdin), options["format"] or _format_of(file), file)
        plan = transfer.import_document(
            document=document,
            project_key=project,
            environment_key=environment,
            **self._import_arguments(options),
            source=SOURCE,
            progress=self._progress,
        )
        if self.as_json:
            return self.print_json({**plan.to_dict(), "dry_run": options["dry_run"]})
        self._print_import(plan, "Import", options)

    def _import_from(self, file: str, project: str | None, environment: str | None, options):
        source = options["source"]
        if file != "-" and Path(file).is_file() and Path(file).stat().st_size > MAX_EXPORT_BYTES:
            raise fail(f"{file} is larger than {MAX_EXPORT_BYTES // 1_000_000} MB")
        text = _read(file, self._stdin)
        if len(text) > MAX_EXPORT_BYTES:
            raise fail(f"{file} is larger than {MAX_EXPORT_BYTES // 1_000_000} MB")
        data = _load(text, options["format"] or _format_of(file), file)
        plan, conversion = importers.import_from(
            source=source,
            data=data,
            project_key=project,
            environment_key=environment,
            **self._import_arguments(options),
            door=SOURCE,
        )
        if self.as_json:
            return self.print_json(
                {
                    **plan.to_dict(),
                    "dry_run": options["dry_run"],
                    "conversion": conversion.to_dict(),
                }
            )
        skipped = tuple(
            f"! flag {name}: not imported: {why}" for name, why in conversion.skipped.items()
        )
        self._print_import(plan, f"Import from {source}", options, skipped)

    def _import_arguments(self, options: dict[str, Any]) -> dict[str, Any]:
        """What every import takes from the command line, whatever the file's format."""
        return {
            "existing": options["existing"],
            "create_missing": options["create_missing"],
            "dry_run": options["dry_run"],
            "actor": self.actor,
        }

    def _print_import(
        self,
        plan: transfer.Plan,
        heading: str,
        options: dict[str, Any],
        notes: tuple[str, ...] = (),
    ) -> None:
        """The plan of an import, the notes (flags left out) first, then what was done."""
        where = f"{plan.project}/{','.join(plan.environments)}"
        self.stdout.write(f"{heading} into {where} (existing: {options['existing']})")
        for note in notes:
            self.stdout.write(note)
        self._print_plan(plan)
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
        else:
            self._done("Imported.")

    def _progress(self, done: int, total: int, key: str) -> None:
        if total < PROGRESS_FROM:
            return
        now = time.monotonic()
        due = done in (1, total) or done % PROGRESS_EVERY == 0
        if due or now - self._progress_at >= PROGRESS_SECONDS:
            self.stderr.write(f"[{done}/{total}] {key}")
            self._progress_at = now

    def _args_promote(self, commands) -> None:
        sub = commands.add_parser(
            "promote", help="copy flags' configuration from one environment to another"
        )
        sub.add_argument("project")
        sub.add_argument("source", metavar="FROM")
        sub.add_argument("target", metavar="TO")
        sub.add_argument("flags", nargs="*", metavar="FLAG")
        sub.add_argument("--all", action="store_true", help="every flag that is not archived")
        sub.add_argument(
            "--keep-enabled",
            action="store_true",
            help="leave on/off as it is in TO; copy only the targeting",
        )
        sub.add_argument("--yes", action="store_true", help="apply without asking")
        sub.add_argument(
            "--no-input", action="store_true", help="never prompt (scripts): same as --yes"
        )
        add_common_arguments(sub)

    def _promote(self, *, project: str, source: str, target: str, flags: list, **options):
        project = project_named(project)
        if options["all"] == bool(flags):
            raise fail("name the flags to promote, or pass --all")
        if options["all"]:
            flags = list(project.flags.filter(archived=False).values_list("key", flat=True))
        arguments: dict[str, Any] = {
            "from_environment": environment_for(project, source),
            "to_environment": environment_for(project, target),
            "flag_keys": flags,
            "include_enabled": not options["keep_enabled"],
        }
        plan = transfer.plan_promote(**arguments, actor=self.actor)
        if not self.as_json:
            self.stdout.write(f"Promote {project.key}: {source} -> {target}")
            self._print_plan(plan)
        if not plan.has_changes:
            if self.as_json:
                return self.print_json({**plan.to_dict(), "applied": False})
            return self._done("Nothing to promote.")
        if not (options["yes"] or options["no_input"] or self._confirm(f"Apply to {target}?")):
            raise CommandError("Cancelled: nothing was changed.", returncode=1)
        plan = transfer.promote(**arguments, actor=self.actor, source=SOURCE)
        if self.as_json:
            return self.print_json({**plan.to_dict(), "applied": True})
        self._done(f"Promoted {plan.counts()['changed']} flag(s) to {target}.")

    def _confirm(self, question: str) -> bool:
        self.stdout.write(f"{question} [y/N] ", ending="")
        self.stdout.flush()
        answer = self._stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    # --- shared -------------------------------------------------------------------------

    @property
    def _stdin(self):
        return self._options_stdin or sys.stdin

    def execute(self, *args, **options):
        self._options_stdin = options.get("stdin")
        return super().execute(*args, **options)

    def _readable(self, project_key: str):
        project = project_named(project_key)
        authorize(self.actor, project, Action.READ)
        return project

    def _done(self, message: str) -> None:
        self.stdout.write(self.style.SUCCESS(message))

    def _print_plan(self, plan: transfer.Plan) -> None:
        marks = {"added": "+", "changed": "~", "unchanged": "=", "skipped": "!"}
        for item in plan.items:
            note = f": {item.summary}" if item.summary else ""
            if item.status in ("unchanged", "skipped"):
                note = f": {item.status}" + (f" ({item.summary})" if item.summary else "")
            self.stdout.write(f"{marks[item.status]} {item.kind} {item.key}{note}")
            for change in item.changes:
                self.stdout.write(f"    {change.describe()}")
        if plan.untouched:
            self.stdout.write(f"Not in the file (left unchanged): {', '.join(plan.untouched)}")
        counts = plan.counts()
        self.stdout.write("Flags: " + ", ".join(f"{n} {status}" for status, n in counts.items()))


SUBCOMMANDS = (
    "projects",
    "environments",
    "list",
    "show",
    "create",
    "archive",
    "toggle",
    "rollout",
    "serve",
    "target",
    "evaluate",
    "keys",
    "secure_mode",
    "export",
    "import",
    "promote",
)


def _flag_in_environment(parser) -> None:
    parser.add_argument("flag", metavar="PROJECT/FLAG")
    parser.add_argument("environment")


def _config(reference: str, environment_key: str) -> FlagConfig:
    flag = flag_named(reference)
    return config_for(flag, environment_for(flag.project, environment_key))


def _flag_row(flag: Flag, environments: list, configs: dict) -> dict:
    states = {}
    for environment in environments:
        config = configs.get((flag.pk, environment.pk))
        enabled = bool(config and config.enabled)
        rollout = bool(config and config.rollout)
        states[environment.key] = {
            "enabled": enabled,
            "serves": "rollout" if rollout else (config.serve_variant if config else None),
            "summary": ("on" if enabled else "off") + (" (rollout)" if rollout else ""),
        }
    return {
        "key": flag.key,
        "name": flag.name,
        "type": flag.type,
        "archived": flag.archived,
        "tags": sorted(tag.name for tag in flag.tags.all()),
        "environments": states,
    }


def _flag_json(flag: Flag) -> dict:
    return {
        "project": flag.project.key,
        "key": flag.key,
        "name": flag.name,
        "type": flag.type,
        "variants": [{"key": v.key, "value": v.value} for v in flag.variants.all()],
        "tags": sorted(flag.tags.values_list("name", flat=True)),
    }


def _variants(text: str) -> list[dict]:
    variants = parse_json(text, "--variants")
    if isinstance(variants, dict):
        return [{"key": key, "value": value} for key, value in variants.items()]
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise fail('--variants: give [{"key": ..., "value": ...}, ...] or {"key": value, ...}')
    return variants


def _weights(flag: Flag, weights: list[str]) -> list[dict]:
    if len(weights) == 1 and "=" not in weights[0] and flag.type == Flag.Type.BOOLEAN:
        percent = _percent("on", weights[0])
        return [{"variant": "on", "weight": percent}, {"variant": "off", "weight": 100 - percent}]
    variants: list[dict[str, Any]] = []
    for item in weights:
        variant, sep, weight = item.partition("=")
        if not sep:
            raise fail(f"give each weight as VARIANT=PERCENT, not {item!r}")
        variants.append({"variant": variant, "weight": _percent(variant, weight)})
    total = sum(item["weight"] for item in variants)
    if total != 100:
        raise fail(f"the percentages must sum to 100, not {total}")
    return variants


def _percent(variant: str, text: str) -> int:
    try:
        percent = int(text)
    except ValueError:
        raise fail(f"the weight of {variant!r} must be a whole percentage, not {text!r}") from None
    if not 0 <= percent <= 100:
        raise fail(f"the weight of {variant!r} must be between 0 and 100, not {percent}")
    return percent


def _attribute(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise fail(f"give context attributes as NAME=VALUE or NAME:=JSON, not {text!r}")
    if name.endswith(":"):
        return name[:-1], parse_json(value, f"attribute {name[:-1]!r}")
    return name, value


def _datetime(text: str) -> datetime:
    value = parse_datetime(text)
    if value is None:
        raise fail(f"--expires: not an ISO date and time: {text!r}")
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def _key_row(key: ApiKey) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": key.pk,
        "prefix": key.prefix,
        "kind": key.kind,
        "project": key.environment.project.key,
        "environment": key.environment.key,
        "name": key.name,
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


def _api_key(reference: str) -> ApiKey:
    keys = ApiKey.objects.select_related("environment__project")
    if reference.isdigit():
        found = list(keys.filter(pk=int(reference)))
    else:
        found = list(keys.filter(prefix=reference.rstrip("…")[:10]))
    if not found:
        raise fail(f"unknown API key {reference!r}")
    if len(found) > 1:
        ids = ", ".join(str(key.pk) for key in found)
        raise fail(f"several keys start with {reference!r}: give the id (one of {ids})")
    return found[0]


def _format_of(path: str | None) -> str:
    return "yaml" if path and path.lower().endswith((".yaml", ".yml")) else "json"


def _dump(document: dict, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _read(path: str, stdin) -> str:
    try:
        return stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise fail(f"cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise fail(f"cannot read {path}: not UTF-8 (byte {error.start})") from error


def _load(text: str, fmt: str, path: str) -> Any:
    if fmt == "json":
        return parse_json(text, path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise fail(f"invalid YAML in {path}: {error}") from error
    except RecursionError:
        raise fail(f"invalid YAML in {path}: {DEPTH_MESSAGE}") from None
    return check_loaded(document, path)
