"""Every deployment artefact uses the same serving model and runs migrations safely."""

import json
import re

import yaml

from tests.deploy.conftest import REPO

SERVE = "python manage.py serve"
MIGRATE = "python manage.py migrate_locked --no-input"


def test_procfile_serves_and_migrates_in_the_release_phase():
    processes = dict(
        line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line
    )
    # A platform routes to the dyno from outside: it binds every address (serve defaults to
    # loopback).
    assert processes == {"release": MIGRATE, "web": f"HOST=0.0.0.0 {SERVE}"}


def test_render_blueprint_serves_migrates_and_wires_the_stores():
    blueprint = yaml.safe_load((REPO / "render.yaml").read_text())
    (web,) = [service for service in blueprint["services"] if service["type"] == "web"]
    assert web["startCommand"] == SERVE
    assert web["preDeployCommand"] == MIGRATE
    assert web["healthCheckPath"] == "/healthz"
    variables = {variable["key"] for variable in web["envVars"]}
    assert {"DB_URL", "REDIS_URL", "NODE_ENV", "JWT_SECRET", "ALLOWED_ORIGINS"} <= variables


def test_image_runs_as_non_root_and_starts_through_the_entrypoint():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)
    assert "EXPOSE 3000" in dockerfile
    assert "/healthz" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    entrypoint = (REPO / "deploy" / "entrypoint.sh").read_text()
    assert 'exec "$PYTHON" manage.py serve' in entrypoint
    assert "manage.py migrate_locked" in entrypoint


def test_ecs_task_serves_through_the_entrypoint_as_non_root():
    task = json.loads((REPO / "deploy" / "ecs" / "task-definition.json").read_text())
    (container,) = task["containerDefinitions"]
    assert container["command"] == ["serve"]
    assert container["user"].split(":")[0] != "0"
    secrets = {secret["name"] for secret in container["secrets"]}
    assert secrets == {"JWT_SECRET", "DB_URL", "REDIS_URL"}


def test_helm_chart_serves_and_migrates_in_a_hook_job():
    templates = REPO / "deploy" / "helm" / "feature-flags" / "templates"
    assert 'args: ["serve"]' in (templates / "deployment.yaml").read_text()
    job = (templates / "migrate-job.yaml").read_text()
    assert "helm.sh/hook: pre-install,pre-upgrade" in job
    assert "- migrate_locked" in job


def test_every_variable_the_settings_read_is_documented():
    settings = (REPO / "flagsite" / "settings.py").read_text()
    read = set(re.findall(r'_env(?:_bool|_int|_list)?\(\s*"([A-Z][A-Z0-9_]+)"', settings))
    read |= set(re.findall(r'os\.environ(?:\.get)?[\[(]\s*"([A-Z][A-Z0-9_]+)"', settings))
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", _configuration_doc(), re.MULTILINE))
    assert read - documented == set(), "document these in docs/configuration.md"


def test_serving_variables_are_documented():
    documented = _configuration_doc()
    for name in (
        "HOST",
        "PORT",
        "WEB_CONCURRENCY",
        "GUNICORN_TIMEOUT",
        "PROMETHEUS_MULTIPROC_DIR",
        "MIGRATE_ON_START",
        "COLLECTSTATIC_ON_START",
    ):
        assert f"| `{name}`" in documented, name


def _configuration_doc() -> str:
    return (REPO / "docs" / "configuration.md").read_text()
