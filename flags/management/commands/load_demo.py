"""Load a small demo project and an admin account (idempotent), for `make run`."""

import hashlib
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from flags import services
from flags.models import FlagConfig, Project

SYSTEM: dict[str, Any] = {"actor": None, "source": "system"}


def _config(flag, environment_key: str) -> FlagConfig:
    return FlagConfig.objects.get(flag=flag, environment__key=environment_key)


class Command(BaseCommand):
    help = "Create the demo project (a few flags with rules and a rollout) and an admin account."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        if settings.PRODUCTION_LIKE:
            raise CommandError(f"refusing to load demo data with NODE_ENV={settings.NODE_ENV}")
        password = self._admin(username)
        if Project.objects.filter(key="demo").exists():
            self.stdout.write("Demo project already loaded.")
        else:
            self._demo()
            self.stdout.write(self.style.SUCCESS("Loaded the demo project 'demo'."))
        self.stdout.write(f"Admin UI: log in as {username!r} with password {password!r}")

    def _admin(self, username: str) -> str:
        """The demo admin's password, kept under var/ so every run prints the same one.

        The file is named after the database, so loading the demo into another database
        never changes the password printed for this one.
        """
        database = str(settings.DATABASES["default"]["NAME"])
        suffix = hashlib.sha256(database.encode()).hexdigest()[:12]
        stored = Path(settings.BASE_DIR) / "var" / f"demo-admin-password-{suffix}"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is not None and stored.exists():
            return stored.read_text().strip()
        password = secrets.token_urlsafe(12)
        if user is None:
            user = user_model(username=username, is_staff=True, is_superuser=True)
        user.set_password(password)
        user.save()
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(password)
        stored.chmod(0o600)
        return password

    @transaction.atomic
    def _demo(self) -> None:
        project = services.project_create(key="demo", name="Demo shop", **SYSTEM)
        services.segment_create(
            project=project,
            key="beta-testers",
            data={
                "name": "Beta testers",
                "conditions": [
                    {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}
                ],
                "included": ["user-42"],
            },
            **SYSTEM,
        )
        checkout = services.flag_create(
            project=project,
            key="new-checkout",
            name="New checkout",
            description="The redesigned checkout flow.",
            tags=["checkout"],
            **SYSTEM,
        )
        rollout = {
            "rules": [
                {
                    "name": "Pro plan in US, CA, GB",
                    "conditions": [
                        {"attribute": "country", "operator": "in", "values": ["US", "CA", "GB"]},
                        {"attribute": "plan", "operator": "equals", "values": ["pro"]},
                    ],
                    "serve": {"variant": "on"},
                },
                {
                    "name": "Beta testers",
                    "conditions": [{"operator": "in_segment", "values": ["beta-testers"]}],
                    "serve": {"variant": "on"},
                },
            ],
            "defaultServe": {
                "rollout": {
                    "bucketBy": "targetingKey",
                    "variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
                }
            },
            "targets": [{"variant": "on", "values": ["user-1"]}],
        }
        for environment in ("development", "staging", "production"):
            services.flag_config_update(
                config=_config(checkout, environment),
                data={**rollout, "enabled": environment != "production"},
                **SYSTEM,
            )
        banner = services.flag_create(
            project=project,
            key="banner-text",
            name="Banner text",
            type="string",
            variants=[
                {"key": "default", "value": "Welcome!"},
                {"key": "sale", "value": "Winter sale: 20% off"},
            ],
            tags=["marketing"],
            **SYSTEM,
        )
        services.flag_config_update(
            config=_config(banner, "development"),
            data={
                "enabled": True,
                "rules": [
                    {
                        "name": "Europe",
                        "conditions": [
                            {"attribute": "country", "operator": "in", "values": ["DE", "FR"]}
                        ],
                        "serve": {"variant": "sale"},
                    }
                ],
            },
            **SYSTEM,
        )
        services.flag_create(
            project=project,
            key="max-cart-items",
            name="Maximum cart items",
            type="number",
            variants=[{"key": "small", "value": 10}, {"key": "large", "value": 50}],
            **SYSTEM,
        )
        services.flag_create(
            project=project,
            key="checkout-api",
            name="Checkout API settings",
            type="json",
            variants=[
                {"key": "v1", "value": {"endpoint": "/api/v1/checkout", "retries": 1}},
                {"key": "v2", "value": {"endpoint": "/api/v2/checkout", "retries": 3}},
            ],
            tags=["checkout"],
            **SYSTEM,
        )
