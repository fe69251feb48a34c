"""Form widgets that edit conditions and rollouts as rows of plain controls instead of JSON.

The JSON text box stays the widget's value and what the form posts: the rows are drawn and
kept in sync with it by `flags/builder.js`, so a page without scripts still works, and the
field parses and checks the text exactly as it did before (`PrettyJSONField`, then the
services). What the builder cannot show faithfully (values that are objects, an unknown
operator's odd fields, a list too long to draw) it leaves to the JSON view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect
from django.template import loader
from django.utils.html import format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from evaluation.engine import OPERATORS
from flags.admin.forms import JSON_WIDGET_ATTRS
from flags.models import Flag, Rule, SeenAttribute, Segment

# The engine's operators in plain words, in the order the menu lists them. An operator the
# engine adds later and this table lacks is still offered, under the engine's description.
OPERATOR_LABELS = {
    "in": "is one of",
    "not_in": "is not one of",
    "equals": "equals",
    "not_equals": "does not equal",
    "contains": "contains",
    "icontains": "contains (any case)",
    "starts_with": "starts with",
    "istarts_with": "starts with (any case)",
    "ends_with": "ends with",
    "iends_with": "ends with (any case)",
    "matches": "matches regex",
    "gt": "greater than",
    "gte": "at least",
    "lt": "less than",
    "lte": "at most",
    "semver_eq": "version is",
    "semver_gt": "version after",
    "semver_gte": "version at least",
    "semver_lt": "version before",
    "semver_lte": "version at most",
    "before": "date before",
    "after": "date after",
    "exists": "is present",
    "not_exists": "is absent",
    "in_cidr": "IP address in network",
    "in_segment": "is in segment",
    "unleash_percentage": "in Unleash gradual rollout [groupId, percentage]",
}
# Operators whose values are numbers (or may be: epoch seconds, Unleash's percentage): a
# value typed as a number is saved as a JSON number, any other value as a string.
NUMBER_OPERATORS = frozenset({"gt", "gte", "lt", "lte", "before", "after", "unleash_percentage"})
SEGMENT_OPERATOR = "in_segment"
# The weights a rollout's percentages become when its own total cannot hold them: 100,000
# is 100% in steps of 0.001%, and is LaunchDarkly's scale (its rollouts must total this).
WEIGHT_SCALE = 100_000
MAX_SUGGESTIONS = 500
MAX_ATTRIBUTE_LENGTH = 200
RECENT_RULES = 1000


@dataclass(frozen=True)
class OperatorChoice:
    name: str
    label: str
    takes_attribute: bool
    takes_values: bool
    numbers: bool
    segment: bool


def operator_choices(*, segments: bool = True) -> list[OperatorChoice]:
    """The engine's operators as the builder's menu; `segments=False` for a segment's own."""
    names = [name for name in OPERATOR_LABELS if name in OPERATORS]
    names += [name for name in OPERATORS if name not in OPERATOR_LABELS]
    return [
        OperatorChoice(
            name=name,
            label=OPERATOR_LABELS.get(name, OPERATORS[name].description),
            takes_attribute=OPERATORS[name].takes_attribute,
            takes_values=OPERATORS[name].takes_values,
            numbers=name in NUMBER_OPERATORS,
            segment=name == SEGMENT_OPERATOR,
        )
        for name in names
        if segments or name != SEGMENT_OPERATOR
    ]


@dataclass(frozen=True)
class Vocabulary:
    """What a project's conditions can name: attributes already in use, and its segments."""

    attributes: tuple[str, ...] = ("targetingKey",)
    segments: tuple[tuple[str, str], ...] = ()  # (key, name)

    # Drawn once per page and shared by its every conditions box (a flag page has dozens).
    @cached_property
    def attribute_options(self) -> SafeString:
        return format_html_join("", '<option value="{}"></option>', ((a,) for a in self.attributes))

    @cached_property
    def segment_options(self) -> SafeString:
        return format_html_join(
            "", '<option value="{}">{} ({})</option>', ((k, n or k, k) for k, n in self.segments)
        )


def _attributes_in(conditions: object) -> Iterable[str]:
    if not isinstance(conditions, list):
        return
    for condition in conditions:
        attribute = condition.get("attribute") if isinstance(condition, dict) else None
        if isinstance(attribute, str) and 0 < len(attribute) <= MAX_ATTRIBUTE_LENGTH:
            yield attribute


def project_vocabulary(project_ids: Iterable[int], *, segments: bool = True) -> Vocabulary:
    """The attributes used in the projects' segments and newest rules, and those
    evaluations in their environments were asked with (targetingKey first).

    Only the newest RECENT_RULES rules are read: a page costs the same with 100 flags as
    with 10,000 (whose 90,000 rules would take seconds to read), and the attributes a
    project uses recur in its newest rules. The names seen in contexts are bounded per
    environment where they are noted (evaluation.attributes).
    """
    ids = list(project_ids)
    rules = (
        Rule.objects.filter(flag__project_id__in=ids)
        .order_by("-pk")
        .values_list("conditions", flat=True)[:RECENT_RULES]
    )
    own = Segment.objects.filter(project_id__in=ids).order_by("key")
    found: set[str] = set()
    for conditions in [*rules, *own.values_list("conditions", flat=True)]:
        found.update(_attributes_in(conditions))
    found.update(
        SeenAttribute.objects.filter(environment__project_id__in=ids).values_list("name", flat=True)
    )
    found.discard("targetingKey")
    attributes = ("targetingKey", *sorted(found)[:MAX_SUGGESTIONS])
    keys = tuple(own.values_list("key", "name")) if segments else ()
    return Vocabulary(attributes=attributes, segments=keys)


class _BuilderWidget(forms.Textarea):
    """A JSON text box (the value posted) with the rows the script draws from it."""

    class Media:
        css = {"all": ("flags/builder.css",)}
        js = ("flags/builder.js",)

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(
            attrs={**JSON_WIDGET_ATTRS, "class": "flags-json flags-source", **(attrs or {})}
        )

    builder_template = ""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        textarea = super().render(name, value, attrs, renderer)
        context = self.get_context(name, value, attrs)
        context["textarea"] = textarea
        # The project's template folder, which the forms' default renderer does not search.
        return mark_safe(loader.render_to_string(self.builder_template, context))  # noqa: S308


class ConditionsWidget(_BuilderWidget):
    """Conditions as rows: attribute, operator in plain words, values; `negate` as "not"."""

    builder_template = "admin/flags/widgets/conditions.html"
    allow_segments = True

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        # Read when the widget is drawn, not when a posted form is only parsed.
        self.vocabulary: Vocabulary | Callable[[], Vocabulary] = Vocabulary()

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        if callable(self.vocabulary):
            self.vocabulary = self.vocabulary()
        context["widget"].update(
            operators=operator_choices(segments=self.allow_segments),
            attribute_options=self.vocabulary.attribute_options,
            segment_options=self.vocabulary.segment_options,
            allow_segments=self.allow_segments,
        )
        return context


class SegmentConditionsWidget(ConditionsWidget):
    """A segment's conditions: the same rows, without `in_segment` (segments do not nest)."""

    allow_segments = False


class RolloutWidget(_BuilderWidget):
    """A rollout as rows of variant and percentage, with the total; weights on request."""

    builder_template = "admin/flags/widgets/rollout.html"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.variants: list[str] = []
        self.fixed_total: int | None = None

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"].update(
            variants=self.variants, fixed_total=self.fixed_total or "", scale=WEIGHT_SCALE
        )
        return context


def bind_builders(form: forms.BaseForm, flag: Flag, variant_keys: list[str]) -> None:
    """Give a flag page row's builders the flag's variants and its project's vocabulary.

    The vocabulary is read once per page, when drawn: the rows share the flag instance.
    """
    for form_field in form.fields.values():
        widget = form_field.widget
        if isinstance(widget, RolloutWidget):
            widget.variants = variant_keys
            # LaunchDarkly's bucketing reads weights on its fixed 100,000 scale.
            widget.fixed_total = WEIGHT_SCALE if flag.bucketing == "launchdarkly" else None
        elif isinstance(widget, ConditionsWidget):
            widget.vocabulary = partial(_flag_vocabulary, flag)


def _flag_vocabulary(flag: Flag) -> Vocabulary:
    if "_admin_vocabulary" not in flag.__dict__:
        flag.__dict__["_admin_vocabulary"] = project_vocabulary([flag.project_id])
    return flag.__dict__["_admin_vocabulary"]


class FlagSearchSelect(AutocompleteSelect):
    """A prerequisite's required flag, found by typing its key or name (Django admin's
    autocomplete): the page holds only the chosen flag, not a menu of the project's every
    flag. `flag_id` (the flag whose page it is) narrows the search to that flag's project,
    without the flag itself (see `FlagAdmin.get_search_results`)."""

    flag_id: int | None = None

    @property
    def media(self) -> forms.Media:
        return super().media + forms.Media(js=["flags/flag-search.js"])

    def get_url(self) -> str:
        url = super().get_url()
        return f"{url}?{urlencode({PREREQUISITE_OF: self.flag_id})}" if self.flag_id else url


PREREQUISITE_OF = "prerequisite_of"  # the search's parameter: whose prerequisite is sought
