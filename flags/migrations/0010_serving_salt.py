"""A rollout may have a bucketing salt of its own (an import keeps the groupId each of a
feature's strategies hashes); empty means the flag's salt."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0009_auditentry_comment"),
    ]

    operations = [
        migrations.AddField(
            model_name="flagconfig",
            name="salt",
            field=models.CharField(
                blank=True,
                help_text="The rollout's bucketing salt; empty means the flag's.",
                max_length=100,
                verbose_name="rollout salt",
            ),
        ),
        migrations.AddField(
            model_name="rule",
            name="salt",
            field=models.CharField(
                blank=True,
                help_text="The rollout's bucketing salt; empty means the flag's.",
                max_length=100,
                verbose_name="rollout salt",
            ),
        ),
    ]
