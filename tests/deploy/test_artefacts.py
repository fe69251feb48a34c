"""Every deployment artefact uses the same serving model and runs migrations safely."""

import json
import re

import yaml

from tests.deploy.conftest import REPO

SERVE = "python manage.py serve"
MIGRATE = "python manage.py migrate_locked --no-input"
SCHEDULER = "python manage.py run_scheduler"


def test_procfile_serves_schedules_and_migrates_in_the_release_phase():
    processes = dict(
        line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line
    )
    # A platform routes to the dyno from outside: it binds every address (serve defaults to
    # loopback).
    assert processes == {
        "release": MIGRATE,
        "web": f"HOST=0.0.0.0 {SERVE}",
        "worker": SCHEDULER,
    }


def test_render_blueprint_serves_schedules_migrates_and_wires_the_stores():
    blueprint = yaml.safe_load((REPO / "render.yaml").read_text())
    (web,) = [service for service in blueprint["services"] if service["type"] == "web"]
    assert web["startCommand"] == SERVE
    assert web["preDeployCommand"] == MIGRATE
    assert web["healthCheckPath"] == "/healthz"
    (worker,) = [service for service in blueprint["services"] if service["type"] == "worker"]
    assert worker["startCommand"] == SCHEDULER
    groups = {group["name"]: group["envVars"] for group in blueprint["envVarGroups"]}

    def variables(service):
        names = set()
        for variable in service["envVars"]:
            if "fromGroup" in variable:
                names |= {grouped["key"] for grouped in groups[variable["fromGroup"]]}
            else:
                names.add(variable["key"])
        return names

    assert {"DB_URL", "REDIS_URL", "NODE_ENV", "JWT_SECRET", "ALLOWED_ORIGINS"} <= variables(web)
    # The scheduler signs nothing, but production refuses to start without the same secret:
    # one generated value, shared through the group.
    assert {"DB_URL", "REDIS_URL", "NODE_ENV", "JWT_SECRET"} <= variables(worker)
    assert not any(v.get("key") == "JWT_SECRET" for s in (web, worker) for v in s["envVars"])


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


def test_ecs_tasks_serve_and_schedule_through_the_entrypoint_as_non_root():
    tasks = [("task-definition.json", "serve"), ("scheduler-task-definition.json", "scheduler")]
    for name, command in tasks:
        task = json.loads((REPO / "deploy" / "ecs" / name).read_text())
        (container,) = task["containerDefinitions"]
        assert container["command"] == [command]
        assert container["user"].split(":")[0] != "0"
        secrets = {secret["name"] for secret in container["secrets"]}
        assert secrets == {"JWT_SECRET", "DB_URL", "REDIS_URL"}


def test_helm_chart_serves_schedules_and_migrates_in_a_hook_job():
    templates = REPO / "deploy" / "helm" / "feature-flags" / "templates"
    assert 'args: ["serve"]' in (templates / "deployment.yaml").read_text()
    assert 'args: ["scheduler"' in (templates / "scheduler-deployment.yaml").read_text()
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
