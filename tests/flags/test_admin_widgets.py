"""The condition and rollout builders' widgets: the JSON box stays the value posted and
round-trips exactly; the menus come from the engine and the project; hostile input is a form
error on the field, never a 500 (this file must also run with DB_URL set)."""

import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from evaluation.engine import OPERATORS
from flags import services
from flags.admin.forms import json_formfield
from flags.admin.widgets import (
    ConditionsWidget,
    RolloutWidget,
    operator_choices,
)
from flags.models import AuditEntry, Rule, Segment
from tests import factories
from tests.flags.test_admin import errors_of, form_data, new_rule, segment_data
from tests.hostile import DEEP, NUL_JSON, SURROGATE_JSON

pytestmark = pytest.mark.django_db


def conditions_field():
    return json_formfield(Rule._meta.get_field("conditions"), (), ConditionsWidget)


def rollout_field():
    return json_formfield(Rule._meta.get_field("rollout"), (), RolloutWidget)


def posted(field, text: str, name: str = "rules-0-conditions"):
    """What the form field makes of `text` posted in the widget's box."""
    return field.clean(field.widget.value_from_datadict({name: text}, {}, name))


def shown(field, value) -> str:
    """The text the widget's box holds for a saved value."""
    return field.widget.format_value(field.prepare_value(value))


# --- The menus ----------------------------------------------------------------------------


def test_the_operator_menu_is_the_engines_own_in_plain_words():
    choices = operator_choices()
    assert {choice.name for choice in choices} == set(OPERATORS)
    labels = {choice.name: choice.label for choice in choices}
    assert labels["in"] == "is one of"
    assert labels["not_in"] == "is not one of"
    assert labels["matches"] == "matches regex"
    assert labels["semver_gte"] == "version at least"
    assert labels["in_segment"] == "is in segment"
    assert len(set(labels.values())) == len(labels), "two operators read the same"
    assert {choice.name for choice in operator_choices(segments=False)} == set(OPERATORS) - {
        "in_segment"
    }


def test_the_rule_builder_suggests_the_projects_attributes_and_names_its_segments(
    client, editor, project, checkout
):
    services.segment_create(
        project=project,
        key="beta",
        data={
            "name": "Beta testers",
            "conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@x.io"]}],
        },
        **factories.SYSTEM,
    )
    other = factories.project("blog")
    services.segment_create(project=other, key="secret", data={}, **factories.SYSTEM)
    rule = {
        "conditions": [{"attribute": "country", "operator": "in", "values": ["US"]}],
        "serve": {"variant": "on"},
    }
    factories.configure(checkout, "development", rules=[rule])
    page = client.get(reverse("admin:flags_flag_change", args=[checkout.pk])).content.decode()
    builder = page[page.index('<div class="flags-builder flags-conditions"') :]
    builder = builder[: builder.index("</template>\n</div>")]
    suggestions = re.findall(r'<option value="([^"]*)"></option>', builder)
    assert suggestions == ["targetingKey", "country", "email"]
    assert '<option value="beta">Beta testers (beta)</option>' in builder
    assert "secret" not in builder, "another project's segment"
    assert "flags/builder.js" in page and "flags/builder.css" in page


def test_the_rule_builder_suggests_the_attributes_evaluations_were_asked_with(
    client, editor, project, checkout
):
    from evaluation import attributes
    from tests.evaluation.document_loader import api_key

    attributes.clear_local()
    production = factories.environment(project, "production")
    context = {"targetingKey": "u-1", "plan": "pro", "appVersion": "2.1"}
    response = client.post(
        "/ofrep/v1/evaluate/flags",
        {"context": context},
        content_type="application/json",
        HTTP_X_API_KEY=api_key(production, "server"),
    )
    assert response.status_code == 200
    elsewhere = factories.environment(factories.project("blog"), "production")
    client.post(
        "/ofrep/v1/evaluate/flags",
        {"context": {"secretAttribute": 1}},
        content_type="application/json",
        HTTP_X_API_KEY=api_key(elsewhere, "server"),
    )
    attributes.flush()
    page = client.get(reverse("admin:flags_flag_change", args=[checkout.pk])).content.decode()
    builder = page[page.index('<div class="flags-builder flags-conditions"') :]
    builder = builder[: builder.index("</template>\n</div>")]
    suggestions = re.findall(r'<option value="([^"]*)"></option>', builder)
    assert suggestions == ["targetingKey", "appVersion", "plan"], "another project's are not"


def test_the_rollout_builder_offers_the_flags_variants(client, editor, project):
    flag = factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "red", "value": "r"}, {"key": "blue", "value": "b"}],
    )
    page = client.get(reverse("admin:flags_flag_change", args=[flag.pk])).content.decode()
    assert '<option value="red">red</option><option value="blue">blue</option>' in page
    assert 'data-fixed-total=""' in page


def test_a_launchdarkly_flags_rollouts_keep_its_fixed_total(client, editor, project):
    flag = factories.flag(project, "imported")
    type(flag).objects.filter(pk=flag.pk).update(bucketing="launchdarkly")
    page = client.get(reverse("admin:flags_flag_change", args=[flag.pk])).content.decode()
    assert 'data-fixed-total="100000"' in page


def test_the_segment_builder_has_no_segment_operator(client, editor, project):
    page = client.get(reverse("admin:flags_segment_add")).content.decode()
    assert 'class="flags-builder flags-conditions"' in page
    assert 'value="in_segment"' not in page
    assert 'value="ends_with"' in page


# --- The round trip -----------------------------------------------------------------------

SAVED_CONDITIONS = [
    [],
    [{"attribute": "country", "operator": "in", "values": ["US", "CA"]}],
    [{"attribute": "plan", "operator": "equals", "values": ["pro"], "negate": True}],
    [{"attribute": "plan", "operator": "equals", "values": ["pro"], "negate": False}],
    [{"operator": "in_segment", "values": ["beta"]}],
    [{"attribute": "age", "operator": "gte", "values": [18, 2.5]}],
    [{"attribute": "email", "operator": "exists"}],
    [{"attribute": "name", "operator": "in", "values": ["Zoë", "東京", 'a"b\\c', "1e3", True]}],
    [{"attribute": "x", "operator": "resembles", "values": ["y"], "note": {"kept": [1]}}],
]


@pytest.mark.parametrize("conditions", SAVED_CONDITIONS)
def test_saved_conditions_come_back_unchanged_through_the_box(conditions):
    field = conditions_field()
    text = shown(field, conditions)
    assert json.loads(text) == conditions
    assert posted(field, text) == conditions
    assert not field.has_changed(conditions, text), "an untouched page changes nothing"


def test_what_is_typed_in_the_json_view_is_what_is_saved():
    field = conditions_field()
    typed = '[{"operator":"in","attribute":"country","values":["US"],"negate":false}]'
    assert posted(field, typed) == json.loads(typed)
    assert posted(field, "") == [], "an emptied box is no conditions"


@pytest.mark.parametrize(
    "rollout",
    [
        [],
        [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}],
        [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 99_999}],
    ],
)
def test_saved_rollouts_come_back_unchanged_through_the_box(rollout):
    field = rollout_field()
    assert posted(field, shown(field, rollout), "rules-0-rollout") == rollout


def test_the_widget_renders_a_box_the_form_posts_and_the_builders_templates():
    widget = ConditionsWidget()
    html = widget.render("rules-0-conditions", '[{"attribute": "a<b", "operator": "exists"}]')
    assert '<textarea name="rules-0-conditions"' in html
    assert "a&lt;b" in html and "a<b" not in html
    assert html.count('class="flags-builder-rows" hidden') == 1, "drawn by the script only"
    assert "<script" not in html, "no inline script under the admin's policy"
    rollout = RolloutWidget()
    rollout.variants = ["on", "off"]
    assert 'name="rules-0-rollout"' in rollout.render("rules-0-rollout", "[]")


# --- Hostile input: form errors, never a 500 ----------------------------------------------

HOSTILE_CONDITIONS = {
    "deep nesting": (DEEP, "nested more than 64 levels deep"),
    "a NUL in a value": (
        '[{"attribute": "a", "operator": "in", "values": [' + NUL_JSON + "]}]",
        "NUL character",
    ),
    "a raw NUL in the box": ('[{"attribute": "a\x00", "operator": "exists"}]', "not valid JSON"),
    "a lone surrogate": (
        '[{"attribute": ' + SURROGATE_JSON + ', "operator": "exists"}]',
        "lone surrogate",
    ),
    "an unknown operator": (
        '[{"attribute": "a", "operator": "resembles", "values": ["x"]}]',
        "unknown operator 'resembles'",
    ),
    "a huge list of conditions": (
        json.dumps([{"attribute": "a", "operator": "exists"}] * 5_000),
        "at most 100 conditions",
    ),
    "values that are not a list": (
        '[{"attribute": "a", "operator": "in", "values": "US"}]',
        "must be a list",
    ),
    "not a list at all": ('{"attribute": "a"}', "must be a list of conditions"),
}


@pytest.mark.parametrize("text, message", HOSTILE_CONDITIONS.values(), ids=HOSTILE_CONDITIONS)
def test_hostile_conditions_on_the_flag_page_are_an_error_next_to_the_field(
    client, editor, checkout, text, message
):
    url = reverse("admin:flags_flag_change", args=[checkout.pk])
    data = form_data(client.get(url))
    data.update(new_rule("development", int(data["rules-TOTAL_FORMS"]), conditions=text))
    response = client.post(url, data)
    assert message in errors_of(response)
    page = response.content.decode()
    assert 'class="flags-builder flags-conditions"' in page, "the builder is drawn again"
    assert not Rule.objects.exists()
    assert not AuditEntry.objects.filter(object_type="flag_config").exists()


HOSTILE_ROLLOUTS = {
    "deep nesting": (DEEP, "nested more than 64 levels deep"),
    "a NUL in a variant": ('[{"variant": ' + NUL_JSON + ', "weight": 1}]', "NUL character"),
    "a lone surrogate": ('[{"variant": ' + SURROGATE_JSON + ', "weight": 1}]', "lone surrogate"),
    "a huge list": (
        json.dumps([{"variant": "on", "weight": 1}] * 20_000),
        "listed twice",
    ),
    "a fractional weight": ('[{"variant": "on", "weight": 0.5}]', "must be an integer >= 0"),
    "a weight as text": ('[{"variant": "on", "weight": "30"}]', "must be an integer >= 0"),
}


@pytest.mark.parametrize("text, message", HOSTILE_ROLLOUTS.values(), ids=HOSTILE_ROLLOUTS)
def test_hostile_rollouts_on_the_flag_page_are_an_error(client, editor, checkout, text, message):
    url = reverse("admin:flags_flag_change", args=[checkout.pk])
    data = form_data(client.get(url))
    data.update({"configs-0-serve_variant": "", "configs-0-rollout": text})
    response = client.post(url, data)
    assert message in errors_of(response)
    assert factories.config(checkout, "development").rollout == []


@pytest.mark.parametrize(
    "text, message",
    [
        (DEEP, "nested more than 64 levels deep"),
        ('[{"operator": "in_segment", "values": ["beta"]}]', "cannot refer to another segment"),
        ('[{"attribute": "a", "operator": "resembles", "values": ["x"]}]', "resembles"),
        ('[{"attribute": ' + SURROGATE_JSON + ', "operator": "exists"}]', "lone surrogate"),
    ],
)
def test_hostile_segment_conditions_are_an_error_on_the_field(
    client, editor, project, text, message
):
    response = client.post(
        reverse("admin:flags_segment_add"), segment_data(project, conditions=text)
    )
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors["conditions"])
    assert not Segment.objects.exists()


@pytest.mark.parametrize("text", [DEEP, "[{", '"\\ud800"', "\x00", "1e999999"])
def test_the_widget_draws_any_posted_text_without_failing(text):
    field = conditions_field()
    with pytest.raises(ValidationError):
        posted(field, text)
    bound = field.bound_data(text, [])
    html = field.widget.render("rules-0-conditions", field.prepare_value(bound))
    assert '<textarea name="rules-0-conditions"' in html
