"""A rule's key is unique in its flag's environment (its own transaction: rows were just
backfilled, and PostgreSQL adds a constraint only without pending row events)."""

from django.db import migrations, models

import flags.models


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0007_rule_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="rule",
            name="key",
            field=models.CharField(
                default=flags.models.new_rule_key,
                max_length=64,
                validators=[flags.models.KEY_VALIDATOR],
            ),
        ),
        migrations.AddConstraint(
            model_name="rule",
            constraint=models.UniqueConstraint(
                fields=("flag", "environment", "key"), name="rule_key_unique"
            ),
        ),
    ]
