"""Secure mode per environment: client keys send an HMAC of their targetingKey."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0004_flag_bucketing"),
    ]

    operations = [
        migrations.AddField(
            model_name="environment",
            name="secure_mode",
            field=models.BooleanField(
                default=False,
                help_text="Client keys must send targetingKeyHash, the HMAC of targetingKey "
                "that your server computes with the environment's secure mode secret.",
            ),
        ),
        migrations.AddField(
            model_name="environment",
            name="secure_mode_secret",
            field=models.CharField(blank=True, editable=False, max_length=100),
        ),
    ]
