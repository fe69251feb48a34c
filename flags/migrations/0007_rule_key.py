"""Rules get a stable key (their `id` in the flag document).

Existing rules take their row id as key, so the `ruleId` evaluations report for them and
the rule ids in their history stay what they were.
"""

from django.db import migrations, models

def backfill(apps, schema_editor):
    Rule = apps.get_model("flags", "Rule")
    for rule in Rule.objects.filter(key="").iterator():
        rule.key = str(rule.pk)
        rule.save(update_fields=["key"])


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0006_rollout_as_list"),
    ]

    operations = [
        migrations.AddField(
            model_name="rule",
            name="key",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
