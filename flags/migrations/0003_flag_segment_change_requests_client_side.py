"""Change requests on a flag's own fields and on segments; flags for client-side keys."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0002_safe_rollouts"),
    ]

    operations = [
        migrations.AddField(
            model_name="changerequest",
            name="flag",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="change_requests",
                to="flags.flag",
            ),
        ),
        migrations.AddField(
            model_name="changerequest",
            name="impact",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="changerequest",
            name="kind",
            field=models.CharField(
                choices=[("config", "Config"), ("flag", "Flag"), ("segment", "Segment")],
                default="config",
                max_length=8,
            ),
        ),
        migrations.AddField(
            model_name="changerequest",
            name="segment",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="change_requests",
                to="flags.segment",
            ),
        ),
        # Flags made before this field existed were all answered to client keys: they keep
        # being (True for existing rows); new flags start unavailable to them (the default).
        migrations.AddField(
            model_name="flag",
            name="client_side",
            field=models.BooleanField(
                default=True,
                help_text="Client keys (browsers, mobile apps) may evaluate this flag.",
                verbose_name="available to client-side keys",
            ),
        ),
        migrations.AlterField(
            model_name="flag",
            name="client_side",
            field=models.BooleanField(
                default=False,
                help_text="Client keys (browsers, mobile apps) may evaluate this flag.",
                verbose_name="available to client-side keys",
            ),
        ),
        migrations.AddField(
            model_name="flag",
            name="version",
            field=models.PositiveIntegerField(default=1, editable=False),
        ),
        migrations.AddField(
            model_name="segment",
            name="version",
            field=models.PositiveIntegerField(default=1, editable=False),
        ),
        migrations.AlterField(
            model_name="changerequest",
            name="config",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="requests",
                to="flags.flagconfig",
            ),
        ),
    ]
