"""One rollout format: `[{"variant": KEY, "weight": N}, ...]`, as the flag document has it.

Rows the admin's forms wrote as `{variant: weight}` become the list, in the flag's variant
order (the order the document gave them until now), so every bucket stays where it was.
"""

from django.db import migrations, models

HELP = (
    'Weights by variant in order, e.g. [{"variant": "on", "weight": 25}, '
    '{"variant": "off", "weight": 75}]; empty for one variant.'
)


def as_list(rollout, keys: list[str]) -> list:
    if isinstance(rollout, list):
        return rollout
    if not rollout:
        return []
    ordered = [key for key in keys if key in rollout] + [key for key in rollout if key not in keys]
    return [{"variant": key, "weight": rollout[key]} for key in ordered]


def forwards(apps, schema_editor):
    Variant = apps.get_model("flags", "Variant")
    for name in ("FlagConfig", "Rule"):
        model = apps.get_model("flags", name)
        for row in model.objects.iterator():
            if isinstance(row.rollout, list):
                continue
            keys = list(
                Variant.objects.filter(flag_id=row.flag_id)
                .order_by("position", "id")
                .values_list("key", flat=True)
            )
            row.rollout = as_list(row.rollout, keys)
            row.save(update_fields=["rollout"])


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0005_environment_secure_mode"),
    ]

    operations = [
        migrations.AlterField(
            model_name="flagconfig",
            name="rollout",
            field=models.JSONField(blank=True, default=list, help_text=HELP),
        ),
        migrations.AlterField(
            model_name="rule",
            name="rollout",
            field=models.JSONField(blank=True, default=list, help_text=HELP),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
