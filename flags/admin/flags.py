"""The flag pages: every flag with its state in each environment, switchable in place, and a
flag page that edits variants and each environment's configuration, rules, targets and
prerequisites inline.

The forms parse and display; saving calls the services every other door calls: the flag's
own fields and variants go to `services.flag_create` / `services.flag_update`, and each
environment the inlines changed goes, as one configuration change in the flag document's
shapes, to `services.flag_config_update` (row lock, role and approval checks, the version
the page was opened at, audit and history named like the API's), all in the admin's one
transaction.
"""

from __future__ import annotations

import json
import weakref
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Model, Prefetch, QuerySet
from django.forms.models import BaseInlineFormSet, construct_instance
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from evaluation import exposures
from evaluation.engine import OPERATORS
from flags import approvals, history, schedules, selectors, services
from flags.admin import flag_review, summary
from flags.admin.access import ProjectScopedAdmin, project_ids
from flags.admin.forms import (
    AdminForm,
    JSONFieldsMixin,
    ServiceErrorsAdmin,
    VariantValueField,
)
from flags.admin.widgets import (
    PREREQUISITE_OF,
    ConditionsWidget,
    FlagSearchSelect,
    RolloutWidget,
    bind_builders,
)
from flags.models import Environment, Flag, FlagConfig, Prerequisite, Rule, Target, Variant
from flags.roles import Action, Actor, allows, needs_change_request
from flags.validation import serving_document

SOURCE = "admin"

CONDITIONS_HELP = (
    "Every condition must hold: one row each, an attribute, an operator in words and its "
    "values (Enter adds the next one); “not” reverses it, and “is in segment” picks "
    "segments by name. No conditions: the rule matches everyone. In the JSON view, a list "
    'such as [{"attribute": "country", "operator": "in", "values": ["US", "CA"]}]; '
    "operators: " + ", ".join(OPERATORS) + "."
)
ROLLOUT_HELP = (
    "One row per variant with its percentage, in bucketing order; the total should be "
    "100% (otherwise each variant gets its share of the total). “Weights” shows the whole "
    "numbers stored, the JSON view the list itself, e.g. "
    '[{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]. No rows: the '
    "variant picked is served to everyone."
)
SERVE_HELP = "The variant served; empty when a rollout is given."
BUCKET_HELP = "The context attribute a rollout buckets by (targetingKey unless you change it)."


# --- Helpers shared by the flag page's inlines -------------------------------------------


def _choices(keys: list[str], current: Any, blank: str) -> list[tuple[str, str]]:
    """The flag's variants as select choices, keeping a stale current value visible."""
    choices = [("", blank)] + [(key, key) for key in keys]
    if current and current not in keys:
        choices.append((current, f"{current} (unknown)"))
    return choices


def rows_context(flag: Flag, user: Actor) -> tuple[list[Environment], set[int], list[str]]:
    """The flag's environments, those the user may change here (directly, or by a change
    request where approval is required), and its variant keys.

    Shared by the page's inlines and formsets (they hold the same flag): read once per page.
    """
    cached = flag.__dict__.get("_admin_rows_context")
    if cached is not None and cached[0] is user:
        return cached[1]
    environments = list(flag.project.environments.all()) if flag.pk else []
    # Where approval is required, those who may ask change the rows too: saving them opens
    # a change request through the review page (flags/admin/flag_review.py).
    may_ask = allows(user, flag.project, Action.CONFIGURE) if flag.pk else False
    writable = {
        env.pk
        for env in environments
        if (
            allows(user, flag.project, Action.CONFIGURE, env)
            and not needs_change_request(user, env)
        )
        or (may_ask and needs_change_request(user, env))
    }
    keys = [variant.key for variant in flag.variants.all()] if flag.pk else []
    context = (environments, writable, keys)
    flag.__dict__["_admin_rows_context"] = (user, context)
    return context


class EnvironmentRowsFormSet(BaseInlineFormSet):
    """Rows that belong to one environment of the flag (configs, rules, targets, ...).

    A row in an environment the user may not configure (a protected one, for an editor) is
    shown with every field disabled, so it cannot be changed or deleted; new rows can only
    go into environments the user may configure.
    """

    model: type[Model]  # set by inlineformset_factory
    user: Actor = None  # set by the inline's get_formset
    variant_fields = ("off_variant", "serve_variant", "variant")

    def _flag_context(self) -> tuple[list[Environment], set[int], list[str]]:
        return rows_context(self.instance, self.user)

    def new_row_environments(self) -> list[Environment]:
        """The environments of the blank rows, one each where the user may add a row (the
        flag page shows each in its environment's tab)."""
        environments, writable, _ = self._flag_context()
        return [environment for environment in environments if environment.pk in writable]

    def new_row_initial(self, environment: Environment) -> dict[str, Any]:
        return {"environment": environment.pk}

    def _construct_form(self, i: int, **kwargs: Any) -> forms.ModelForm[Any]:
        blank = i - self.initial_form_count()
        new = self.new_row_environments() if blank >= 0 and self.instance.pk else []
        if blank >= 0 and blank < len(new):
            kwargs.setdefault("initial", self.new_row_initial(new[blank]))
        form = super()._construct_form(i, **kwargs)  # type: ignore[misc]  # not in the stubs
        setattr(form.instance, self.fk.name, self.instance)  # the flag, not read again per row
        if blank >= 0 and blank < len(new) and form.instance.environment_id is None:
            form.instance.environment = new[blank]  # the tab it is shown in
        return form

    def add_fields(self, form: forms.ModelForm[Any], index: int | None) -> None:
        super().add_fields(form, index)
        environments, writable, keys = self._flag_context()
        locked = form.instance.pk is not None and form.instance.environment_id not in writable
        for name in self.variant_fields:
            if name in form.fields:
                blank = "— rollout —" if name == "serve_variant" else "---------"
                current = form.initial.get(name)
                form.fields[name].widget = forms.Select(choices=_choices(keys, current, blank))
        bind_builders(form, self.instance, keys)
        # The choice fields' label and lookup are set on this form's field itself, as Django's
        # ModelChoiceField reads them (`label_from_instance`, `to_python`): hence method-assign.
        environment = form.fields.get("environment")
        if isinstance(environment, forms.ModelChoiceField):
            environment.widget = forms.HiddenInput()  # the row's tab says which environment
            allowed = environments if locked else [e for e in environments if e.pk in writable]
            environment.queryset = Environment.objects.filter(pk__in=[e.pk for e in allowed])
            environment.label_from_instance = _environment_label  # type: ignore[method-assign, assignment]
            rows = {str(e.pk): e for e in allowed}
            environment.to_python = partial(_known_row, environment, rows)  # type: ignore[method-assign]
        pk_field = form.fields.get(self.model._meta.pk.name)
        if isinstance(pk_field, forms.ModelChoiceField):
            pk_field.to_python = partial(_known_row, pk_field, self._rows_by_pk())  # type: ignore[method-assign]
        required_flag = form.fields.get("required_flag")
        if isinstance(required_flag, forms.ModelChoiceField):
            flag = self.instance
            required_flag.queryset = Flag.objects.filter(project_id=flag.project_id).exclude(
                pk=flag.pk
            )
            if isinstance(required_flag.widget, FlagSearchSelect):
                required_flag.widget.flag_id = flag.pk
        if locked:
            for name, field in form.fields.items():
                if name not in (self.fk.name, self.model._meta.pk.name):
                    field.disabled = True
        self._label_inputs(form, index, environments)

    def _label_inputs(
        self, form: forms.ModelForm[Any], index: int | None, environments: list[Environment]
    ) -> None:
        """Each box of a row says what it is for (a table cell has no <label>)."""
        names = {environment.pk: environment.name for environment in environments}
        where = names.get(form.instance.environment_id, "")
        noun = str(self.model._meta.verbose_name)
        row = f"{noun} {index + 1}" if form.instance.pk and index is not None else f"new {noun}"
        if where:
            row = where if self.model is FlagConfig else f"{row} in {where}"
        label_inputs(form, row)

    def _rows_by_pk(self) -> dict[str, Any]:
        if not hasattr(self, "_rows"):
            self._rows = {str(row.pk): row for row in self.get_queryset()}
        return self._rows


def label_inputs(form: forms.BaseForm, row: str) -> None:
    """An accessible name on each visible box of a table row: "Name (rule 2 in Staging)"."""
    for name, field in form.fields.items():
        if not field.widget.is_hidden:
            label = "Delete" if name == "DELETE" else (field.label or name.replace("_", " "))
            field.widget.attrs.setdefault("aria-label", f"{label} ({row})")


def _known_row(field: forms.ModelChoiceField, rows: dict[str, Any], value: Any) -> Any:
    """A choice among rows already read (a ModelChoiceField would read each one again)."""
    if value in field.empty_values:
        return None
    row = rows.get(str(value))
    if row is None:
        raise ValidationError(field.error_messages["invalid_choice"], code="invalid_choice")
    return row


def _environment_label(environment: Environment) -> str:
    return f"{environment.name} (protected)" if environment.protected else environment.name


class FlagPageInline(JSONFieldsMixin, admin.TabularInline):
    """An inline of the flag page: readable by members, changed by `edit_action`."""

    form = AdminForm
    extra = 0
    edit_action = Action.CONFIGURE

    def _may(self, request: HttpRequest, flag: Flag | None, action: Action) -> bool:
        if flag is None:  # the add page: FlagAdmin already checked the user may add flags
            return True
        return allows(request.user, flag.project, action)

    def has_view_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return self._may(request, obj, Action.READ)

    def has_change_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return self._may(request, obj, self.edit_action)

    def has_add_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return self._may(request, obj, self.edit_action)

    def has_delete_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return self._may(request, obj, self.edit_action)


class EnvironmentRowForm(AdminForm):
    """A row of an environment's configuration: parsed and shown here, validated by
    `services.flag_config_update` when the page is saved (its errors come back on the page)."""

    def _post_clean(self) -> None:
        pass


class EnvironmentRowInline(FlagPageInline):
    form = EnvironmentRowForm
    formset = EnvironmentRowsFormSet

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("environment")

    def get_formset(self, request: HttpRequest, obj: Flag | None = None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        if issubclass(formset, EnvironmentRowsFormSet):  # built from self.formset
            formset.user = request.user  # a new class per call: safe to set
        return formset

    def get_extra(self, request: HttpRequest, obj: Flag | None = None, **kwargs) -> int:
        """One blank row per environment the user may change (shown in its tab)."""
        if obj is None or not self.has_add_permission(request, obj):
            return 0
        _, writable, _ = rows_context(obj, request.user)
        return len(writable)

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and isinstance(field.widget, RelatedFieldWidgetWrapper):
            field.widget = field.widget.widget  # no "add another flag" pop-ups in a row
        if field is not None and field.initial is None and db_field.has_default():
            # A new row's JSON boxes start as the model's empty value ([]), not `null`,
            # which the store refuses.
            field.initial = db_field.get_default()
        return field


# --- The inlines -------------------------------------------------------------------------


class VariantValueBox(VariantValueField):
    """A new variant's value box starts empty, not `null`."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class VariantForm(AdminForm):
    value = VariantValueBox(
        help_text='JSON of the flag\'s type: true, 42, "blue" (plain text is taken as a '
        'string), {"color": "blue"}.'
    )


# A new flag's variant rows: what a boolean flag gets; left as they are, the service gives
# a boolean flag exactly these, and other types are asked to list theirs.
NEW_FLAG_VARIANTS = [
    {"key": "on", "value": True, "position": 0},
    {"key": "off", "value": False, "position": 1},
]


class VariantFormSet(BaseInlineFormSet):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.initial_extra = [dict(row) for row in NEW_FLAG_VARIANTS]

    def add_fields(self, form: forms.ModelForm[Any], index: int | None) -> None:
        super().add_fields(form, index)
        if form.instance.pk and "key" in form.fields:
            form.fields["key"].disabled = True  # rules, targets and configs refer to it
        key = form.instance.key if form.instance.pk else ""
        label_inputs(form, f"variant {key}" if key else "new variant")


class VariantInline(FlagPageInline):
    model = Variant
    form = VariantForm
    formset = VariantFormSet
    readonly_fields = ("value_json",)
    edit_action = Action.EDIT_FLAGS
    verbose_name_plural = "variants (boolean flags have on and off; save before serving a new one)"

    def get_fields(self, request: HttpRequest, obj: Flag | None = None):
        if obj is not None and not self.has_change_permission(request, obj):
            return ("key", "name", "value_json", "position")  # shown, not edited
        return ("key", "name", "value", "position")

    @admin.display(description="value")
    def value_json(self, variant: Variant) -> str:
        return json.dumps(variant.value, ensure_ascii=False)

    def get_extra(self, request: HttpRequest, obj: Flag | None = None, **kwargs) -> int:
        return 2 if obj is None else 1

    def _fixed(self, obj: Flag | None) -> bool:
        return obj is not None and obj.type == Flag.Type.BOOLEAN

    def has_change_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return not self._fixed(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return not self._fixed(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return not self._fixed(obj) and super().has_delete_permission(request, obj)


def rollout_split(rollout: object) -> str:
    """A saved rollout's weights as the shares users get: "on 25% · off 75%"."""
    split = summary.shares(rollout)
    if not split:
        return "-"
    return " · ".join(f"{variant} {percent}%" for variant, percent in split)


class SplitMixin:
    """A read-only column with the saved rollout's weights as percentages."""

    @admin.display(description="split")
    def split(self, row: FlagConfig | Rule) -> str:
        return rollout_split(row.rollout)


class FlagConfigInline(SplitMixin, EnvironmentRowInline):
    model = FlagConfig
    fields = (
        "environment_name",
        "enabled",
        "off_variant",
        "serve_variant",
        "rollout",
        "split",
        "bucket_by",
        "salt",
    )
    readonly_fields = ("environment_name", "split", "salt")
    can_delete = False
    verbose_name_plural = "environments: on/off and what is served when no rule matches"
    help_texts = {"rollout": ROLLOUT_HELP, "serve_variant": SERVE_HELP, "bucket_by": BUCKET_HELP}
    json_widgets = {"rollout": RolloutWidget}

    def has_add_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return False  # one per environment, made with the flag and the environment

    @admin.display(description="environment")
    def environment_name(self, config: FlagConfig) -> str:
        return _environment_label(config.environment)


class RuleFormSet(EnvironmentRowsFormSet):
    def new_row_initial(self, environment: Environment) -> dict[str, Any]:
        """A new rule serves a variant ("on" for a boolean flag), no rollout."""
        _, _, keys = self._flag_context()
        first = "on" if "on" in keys else (keys[0] if keys else "")
        return {**super().new_row_initial(environment), "serve_variant": first}


class RuleInline(SplitMixin, EnvironmentRowInline):
    model = Rule
    formset = RuleFormSet
    fields = (
        "key",
        "environment",
        "position",
        "name",
        "conditions",
        "serve_variant",
        "rollout",
        "split",
        "bucket_by",
        "salt",
    )
    readonly_fields = ("key", "split", "salt")  # key: the rule's id, kept through every change
    verbose_name_plural = "rules (in each environment, the first rule that matches serves)"
    help_texts = {
        "conditions": CONDITIONS_HELP,
        "rollout": ROLLOUT_HELP,
        "serve_variant": SERVE_HELP,
        "bucket_by": BUCKET_HELP,
    }
    json_widgets = {"conditions": ConditionsWidget, "rollout": RolloutWidget}


class TargetInline(EnvironmentRowInline):
    model = Target
    fields = ("environment", "variant", "values")
    key_list_fields = ("values",)
    verbose_name_plural = "targets (these targeting keys get the variant before any rule)"
    help_texts = {"values": "Targeting keys, one per line, e.g. user-1."}


class PrerequisiteInline(EnvironmentRowInline):
    model = Prerequisite
    fk_name = "flag"
    fields = ("environment", "required_flag", "variants")
    key_list_fields = ("variants",)
    verbose_name_plural = "prerequisites (the flag is served only if these flags serve ...)"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("required_flag")  # for the summary

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "required_flag":
            # Searched, not listed: a project may hold 10,000 flags.
            kwargs["widget"] = FlagSearchSelect(db_field, self.admin_site)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    help_texts = {"variants": "Variant keys of the required flag, one per line, e.g. on."}


# --- The list's filters and columns ------------------------------------------------------


# Per request: the list page asks for them for each column and each action.
_environment_keys: weakref.WeakKeyDictionary[HttpRequest, list[tuple[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def environment_keys(request: HttpRequest) -> list[tuple[str, str]]:
    """(key, name) of the environments of the listed projects, in their order."""
    if request not in _environment_keys:
        environments = Environment.objects.filter(project_id__in=project_ids(request, Action.READ))
        chosen = request.GET.get("project__id__exact", "")
        if chosen.isdigit():
            environments = environments.filter(project_id=int(chosen))
        seen: dict[str, str] = {}
        for key, name in environments.order_by("position", "key").values_list("key", "name"):
            seen.setdefault(key, name)
        _environment_keys[request] = list(seen.items())
    return _environment_keys[request]


class EnvironmentStateFilter(admin.SimpleListFilter):
    title = "state in environment"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        lookups = []
        for key, name in environment_keys(request):
            lookups += [(f"{key}:on", f"On in {name}"), (f"{key}:off", f"Off in {name}")]
        return lookups

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        key, _, state = (self.value() or "").rpartition(":")
        if not key or state not in ("on", "off"):
            return queryset
        # One filter() call, so both conditions hold for the same configuration row.
        return queryset.filter(configs__environment__key=key, configs__enabled=state == "on")


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        flags = model_admin.get_queryset(request)
        names = flags.filter(tags__isnull=False).values_list("tags__name", flat=True)
        return [(name, name) for name in sorted(set(names))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(tags__name=self.value()) if self.value() else queryset


# --- The flag admin ----------------------------------------------------------------------


class FlagChangeList(ChangeList):
    """The flag list, with every environment's rules, targets and prerequisites read for
    its serving column: one query each, however many flags are listed."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        return (
            super()
            .get_queryset(request, exclude_parameters)
            .prefetch_related("rules", "targets", "prerequisites")
        )


def environment_rows(flag: Flag, environment_id: int) -> tuple[list, list, list]:
    """The flag's rules, targets and prerequisites in one environment (prefetched lists)."""
    return tuple(  # type: ignore[return-value]
        [row for row in rows.all() if row.environment_id == environment_id]
        for rows in (flag.rules, flag.targets, flag.prerequisites)
    )


def page_fingerprint(flag: Flag) -> str:
    """What the flag page showed: the flag's last change and each configuration's version."""
    configs = sorted(flag.configs.all(), key=lambda config: config.environment_id)  # prefetched
    pairs = ",".join(f"{config.environment_id}={config.version}" for config in configs)
    return f"{flag.updated_at.timestamp():.6f}|{pairs}"


class FlagForm(AdminForm):
    tag_names = forms.CharField(
        label="Tags",
        required=False,
        help_text="Comma-separated, e.g. checkout, mobile. New tags are created.",
    )
    # The page's fingerprint when it was opened: a save over someone else's newer change is
    # refused instead of silently overwriting it (the API answers 409 in that case).
    loaded = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Flag
        exclude = ("tags",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            names = sorted(tag.name for tag in self.instance.tags.all())
            self.initial.setdefault("tag_names", ", ".join(names))
            if not self.is_bound:  # a posted page carries what it was opened at
                self.initial.setdefault("loaded", page_fingerprint(self.instance))

    def clean(self) -> dict:
        cleaned = super().clean()
        loaded = cleaned.get("loaded", "")
        if loaded and self.instance.pk and loaded != page_fingerprint(self.instance):
            raise forms.ValidationError(
                "Someone changed this flag since you opened the page. Reload it, then make "
                "your change again."
            )
        return cleaned

    def clean_tag_names(self) -> list[str]:
        return [name.strip() for name in self.cleaned_data["tag_names"].split(",") if name.strip()]


def _variants_from(formset: BaseInlineFormSet) -> list[dict]:
    """The variants a valid variants formset describes, in the order of their position."""
    rows = []
    deleted = formset.deleted_forms
    for index, form in enumerate(formset.forms):
        if form in deleted or (form.instance.pk is None and not form.has_changed()):
            continue
        data = form.cleaned_data
        variant = {"key": data["key"], "name": data.get("name", ""), "value": data["value"]}
        rows.append((data.get("position") or 0, index, variant))
    return [variant for _, _, variant in sorted(rows, key=lambda row: row[:2])]


# Set on a request whose flag page save only opened change requests.
ONLY_PROPOSED = "flags_only_proposed"


def _record_changes(formset: BaseInlineFormSet) -> None:
    """What Django's change history says about a formset a service saved."""
    deleted = formset.deleted_forms
    changed = [form for form in formset.forms if form.has_changed() and form not in deleted]
    # A new row's instance is given its values (the service wrote the row) for its name.
    formset.new_objects = [
        construct_instance(form, form.instance) for form in changed if form.instance.pk is None
    ]
    formset.changed_objects = [
        (form.instance, form.changed_data) for form in changed if form.instance.pk is not None
    ]
    formset.deleted_objects = [form.instance for form in deleted if form.instance.pk is not None]


def adopt(unsaved: Any, saved: Any) -> None:
    """Make the admin's form instance the row a service created, for the admin's redirects
    and history."""
    unsaved.pk = saved.pk
    unsaved._state.adding = False
    unsaved._state.db = saved._state.db
    for field in ("created_at", "updated_at"):
        if hasattr(saved, field):
            setattr(unsaved, field, getattr(saved, field))


# The flag a review's save checked its token against, handed once to the form that saves it.
_prechecked: weakref.WeakKeyDictionary[HttpRequest, Flag] = weakref.WeakKeyDictionary()


@admin.register(Flag)
class FlagAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    form = FlagForm
    list_filter = (
        ("project", admin.RelatedOnlyFieldListFilter),
        EnvironmentStateFilter,
        TagFilter,
        "archived",
        "type",
    )
    search_fields = ("key", "name", "tags__name")
    list_select_related = ("project",)
    list_per_page = 50
    actions = ("archive_flags", "restore_flags")
    inlines = (VariantInline, FlagConfigInline, RuleInline, TargetInline, PrerequisiteInline)

    class Media:
        css = {"all": ("flags/admin.css",)}

    # --- What is shown and who may change it

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        configs = FlagConfig.objects.select_related("environment")
        return (
            super()
            .get_queryset(request)
            .select_related("project")
            .prefetch_related("tags", "variants", Prefetch("configs", queryset=configs))
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return FlagChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """The prerequisite box's search (FlagSearchSelect) finds the other flags of the
        page's flag's project, among those the user may read."""
        of = request.GET.get(PREREQUISITE_OF, "")
        if of:
            if not (of.isascii() and of.isdigit() and len(of) < 19):  # a primary key
                return queryset.none(), False
            project = Flag.objects.filter(pk=int(of)).values("project_id")
            queryset = queryset.filter(project_id__in=project).exclude(pk=int(of))
        return super().get_search_results(request, queryset, search_term)

    def has_delete_permission(self, request: HttpRequest, obj: Flag | None = None) -> bool:
        return False  # flags are archived, never deleted: services may still ask for them

    def get_inlines(self, request: HttpRequest, obj: Flag | None):
        # A new flag has no environments' rows yet: it gets them when it is created.
        return self.inlines if obj is not None else (VariantInline,)

    def get_fieldsets(self, request: HttpRequest, obj: Flag | None = None):
        main = ["project", "key", "name", "type", "description", "tag_names", "owner"]
        bucketing = ("salt", "bucketing") if obj is not None else ("salt",)
        if obj is not None:
            main += ["archived", "client_side", "loaded"]  # links: in the tabs below
        else:
            main += ["client_side"]
        return (
            (None, {"fields": main}),
            ("Bucketing", {"classes": ("collapse",), "fields": bucketing}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Flag | None = None):
        # The bucketing scheme comes with the flag (an import keeps its system's): changing
        # it would move users to other variants, so the page shows it and never edits it.
        readonly = ("project", "key", "type", "bucketing")
        return readonly if obj is not None else ()

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        allowed = project_ids(request, self.edit_action)
        if "project" not in initial and len(allowed) == 1:
            initial["project"] = next(iter(allowed))  # the only project the user adds flags to
        return initial

    def formfield_for_dbfield(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "owner":
            # A plain choice of members: no "add user" pop-up (a new user is no member yet),
            # and no reading of the user admin's permissions on every page.
            return self.formfield_for_foreignkey(db_field, request, **kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "owner":
            users = get_user_model().objects.filter(is_active=True)
            if not request.user.is_superuser:
                members = project_ids(request, Action.READ)
                users = users.filter(memberships__project_id__in=members).distinct()
            kwargs["queryset"] = users.order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # --- The flag page's tabs: one per environment, then history, evaluations, schedule, audit

    def render_change_form(
        self, request: HttpRequest, context: dict, add=False, change=False, form_url="", obj=None
    ):
        if obj is not None and obj.pk:
            context["flag_tabs"] = page_tabs(request, obj, context["inline_admin_formsets"])
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- The list

    def get_list_display(self, request: HttpRequest):
        states = [self._state_column(request, key, name) for key, name in environment_keys(request)]
        return ("key", "name", "project", *states, "tag_list", "archived", "updated_at")

    @admin.display(description="tags")
    def tag_list(self, flag: Flag) -> str:
        return ", ".join(sorted(tag.name for tag in flag.tags.all()))

    def _state_column(self, request: HttpRequest, key: str, name: str):
        """A column with the flag's state in environment `key`, a button where allowed.

        The buttons live inside the list's form (which carries the CSRF token) and post it
        to the toggle view through `formaction`, so the list needs no script.
        """
        back = urlencode({"next": request.get_full_path()})

        @admin.display(description=name)
        def column(flag: Flag) -> str:
            config = next((c for c in flag.configs.all() if c.environment.key == key), None)
            if config is None:
                return "–"
            switch = format_html("{}{}", button(flag, config), kill(flag, config))
            serving = summary.short(config, *environment_rows(flag, config.environment_id))
            if serving == ("On" if config.enabled else "Off"):
                return switch
            # More than the switch says (a rollout, rules, targets): what is served, in words.
            return format_html('{} <span class="flag-serving">{}</span>', switch, serving)

        def kill(flag: Flag, config: FlagConfig) -> str:
            """A protected environment's kill switch, one click from the list: off now (with
            a comment on its confirmation page), needing no change request."""
            environment = config.environment
            if not (config.enabled and environment.protected):
                return ""
            if not allows(request.user, flag.project, Action.CONFIGURE, environment):
                return ""
            return format_html(
                ' <a class="flags-kill-list" href="{}" title="Kill switch: turn {} off now in {}">'
                "Kill</a>",
                reverse("admin:flags_rollout_confirm_kill", args=[config.pk]),
                flag.key,
                name,
            )

        def button(flag: Flag, config: FlagConfig) -> str:
            state = "on" if config.enabled else "off"
            label = "On" if config.enabled else "Off"
            environment = config.environment
            may_switch = allows(request.user, flag.project, Action.CONFIGURE, environment)
            # An editor where approval is required cannot switch, but may ask: the
            # confirmation page opens the change request.
            may_ask = (  # as needs_change_request: not an admin (who may switch)
                not may_switch
                and environment.protected
                and flag.project.require_approval
                and allows(request.user, flag.project, Action.CONFIGURE)
            )
            if not may_switch and not may_ask:
                return format_html(
                    '<span class="flag-state flag-state-{} flag-state-locked" '
                    'title="Your role cannot change {}">{}</span>',
                    state,
                    name,
                    label,
                )
            url = reverse("admin:flags_flag_toggle", args=[flag.pk, config.environment_id])
            if config.environment.protected:  # a page that shows the change, with a comment
                url = reverse("admin:flags_rollout_confirm_switch", args=[config.pk])
            turn = "off" if config.enabled else "on"
            verb = "Ask to turn" if may_ask else "Turn"
            return format_html(
                '<button type="submit" class="flag-state flag-state-{}" formaction="{}?{}" '
                'name="enabled" value="{}" title="{} {} {} in {}">{}</button>',
                state,
                url,
                back,
                turn,
                verb,
                flag.key,
                turn,
                name,
                label,
            )

        column.__name__ = f"state_{key}"
        return column

    # --- Switching a flag on or off in one environment

    def get_urls(self):
        toggle = self.admin_site.admin_view(self.toggle_view)
        return [
            path(
                "<path:object_id>/toggle/<int:environment_id>/",
                toggle,
                name="flags_flag_toggle",
            ),
            *super().get_urls(),
        ]

    def toggle_view(self, request: HttpRequest, object_id: str, environment_id: int):
        """POST `enabled=on|off`: switch the flag in one environment, then go back."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        flag = self.get_object(request, object_id)
        if flag is None:
            raise Http404("No such flag or environment.")
        config = (
            FlagConfig.objects.select_related("environment")
            .filter(flag=flag, environment_id=environment_id)
            .first()
        )
        if config is None:
            raise Http404("No such flag or environment.")
        enabled = request.POST.get("enabled") == "on"
        problem = self._switch(request, flag, config, enabled)
        if problem:
            self.message_user(request, problem, messages.ERROR)
        else:
            state = "on" if enabled else "off"
            self.message_user(
                request, f"{flag.key} is {state} in {config.environment.name}.", messages.SUCCESS
            )
        return HttpResponseRedirect(self._back(request))

    def _back(self, request: HttpRequest) -> str:
        target = request.GET.get("next", "")
        if url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return target
        return reverse("admin:flags_flag_changelist")

    def _switch(self, request: HttpRequest, flag: Flag, config: FlagConfig, enabled: bool):
        """Switch through the service; the reason it refused, or None."""
        if config.enabled == enabled:
            return None
        try:
            services.flag_toggle(config=config, enabled=enabled, actor=request.user, source=SOURCE)
        except (PermissionDenied, ValidationError) as error:
            reason = "; ".join(error.messages) if isinstance(error, ValidationError) else error
            return f"{flag.key} was not changed: {reason}"
        state = "on" if enabled else "off"
        self.log_change(request, flag, f"Turned {state} in {config.environment.name}.")
        return None

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        if not self.has_change_permission(request):
            return actions
        for key, name in environment_keys(request):
            for enabled in (True, False):
                action = self._switch_action(key, name, enabled)
                actions[action.__name__] = (action, action.__name__, action.short_description)
        return actions

    def _switch_action(self, key: str, name: str, enabled: bool):
        state = "on" if enabled else "off"

        @admin.action(description=f"Turn {state} in {name}")
        def action(modeladmin, request: HttpRequest, queryset: QuerySet) -> None:
            configs = FlagConfig.objects.select_related("environment", "flag__project").filter(
                flag__in=queryset, environment__key=key
            )
            problems = [self._switch(request, c.flag, c, enabled) for c in configs]
            refused = [problem for problem in problems if problem]
            done = len(problems) - len(refused)
            if done:
                self.message_user(request, f"{done} flag(s) {state} in {name}.", messages.SUCCESS)
            for problem in refused:
                self.message_user(request, problem, messages.ERROR)

        action.__name__ = f"turn_{state}_{key}"
        return action

    @admin.action(description="Archive selected flags", permissions=["change"])
    def archive_flags(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_archived(request, queryset, archived=True)

    @admin.action(description="Restore selected flags from the archive", permissions=["change"])
    def restore_flags(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_archived(request, queryset, archived=False)

    def _set_archived(self, request: HttpRequest, queryset: QuerySet, *, archived: bool) -> None:
        verb = "Archived" if archived else "Restored"
        for flag in queryset.select_related("project"):
            if flag.archived == archived:
                continue
            try:
                services.flag_update(
                    flag=flag, data={"archived": archived}, actor=request.user, source=SOURCE
                )
            except PermissionDenied as error:
                self.message_user(request, f"{flag.key}: {error}", messages.ERROR)
                continue
            self.log_change(request, flag, f"{verb}.")
            self.message_user(request, f"{verb} {flag.key}.", messages.SUCCESS)

    # --- Saving the flag page through the services

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            raw = request.POST.get(flag_review.TOKEN_FIELD) if request.method == "POST" else None
            if raw is not None and object_id is not None:
                # Before the form: a stale review is a 409 page, not the form's error.
                flag = self.get_object(request, object_id)
                if flag is not None and self.has_change_permission(request, flag):
                    flag_review.check_token(request, flag, raw)
                    _prechecked[request] = flag  # the form's object: not read twice
            return super().changeform_view(request, object_id, form_url, extra_context)
        except flag_review.ReviewNeeded as needed:
            return self._review_page(request, object_id, needed)
        except flag_review.ReviewRefused as refused:
            return self._review_refused(request, object_id, refused)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        flag = _prechecked.pop(request, None)
        if flag is not None and str(flag.pk) == str(object_id) and from_field is None:
            return flag
        return super().get_object(request, object_id, from_field)

    def _review_page(
        self, request: HttpRequest, object_id: str | None, needed: flag_review.ReviewNeeded
    ) -> HttpResponse:
        flag = self.get_object(request, object_id or "")
        if flag is None:
            raise Http404("No such flag.")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Review your change to {flag.key}",
            "flag": flag,
            "opts": self.opts,
            "reviews": needed.reviews,
            "token": needed.token,
            "token_field": flag_review.TOKEN_FIELD,
            "hidden": needed.hidden,
            "error": needed.error,
            "may_save": all(review.mode != "refused" for review in needed.reviews),
            "back": reverse("admin:flags_flag_change", args=[flag.pk]),
        }
        return TemplateResponse(
            request, "admin/flags/flag/review.html", context, status=needed.status
        )

    def _review_refused(
        self, request: HttpRequest, object_id: str | None, refused: flag_review.ReviewRefused
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Nothing was saved",
            "opts": self.opts,
            "error": refused.message,
            "back": reverse("admin:flags_flag_change", args=[object_id])
            if object_id and object_id.isdigit() and len(object_id) < 19
            else reverse("admin:flags_flag_changelist"),
        }
        return TemplateResponse(
            request, "admin/flags/flag/review_refused.html", context, status=refused.status
        )

    def save_model(self, request: HttpRequest, obj: Flag, form, change: bool) -> None:
        """Nothing yet: the flag is written with its variants in `save_related`."""

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        variants = next(formset for formset in formsets if formset.model is Variant)
        if not change:
            self._create(request, form, variants)
            return
        flag = form.instance  # holds the form's values: re-read below before writing them
        configs = {c.environment_id: c for c in flag.configs.all()}  # prefetched by get_queryset
        changes = _environment_changes(formsets)
        # Protected environments' changes go through the review page first (nothing written).
        reviews = flag_review.reviewed(request, flag, configs, changes)
        data = {
            name: form.cleaned_data[name]
            for name in ("name", "description", "salt", "archived", "owner", "client_side")
            if name in form.cleaned_data
        }
        data["tags"] = form.cleaned_data.get("tag_names", [])
        if variants.has_changed():
            data["variants"] = _variants_from(variants)
        # Whether anything was written, or only change requests opened (then Django's "was
        # changed successfully" would be wrong: `message_user` leaves it out).
        written = requested = False
        fields = set(form.changed_data) - {"loaded"}
        if variants.has_changed() or fields:
            stored = Flag.objects.select_related("project").get(pk=flag.pk)
            asked = self._update_flag(request, stored, data)
            requested |= asked
            written |= not asked or bool(fields - set(approvals.FLAG_REQUEST_FIELDS))
        versions = _loaded_versions(form.cleaned_data.get("loaded", ""))
        for environment_id, environment_change in changes.items():
            config = configs[environment_id]
            review = reviews.get(environment_id)
            try:
                if review is not None and review.mode == "propose":
                    proposed = approvals.change_request_create(
                        config=config,
                        data=environment_change,
                        title=review.title,
                        expected_version=versions.get(environment_id),
                        actor=request.user,
                        source=SOURCE,
                        comment=review.comment,
                    )
                    self.message_user(
                        request,
                        f"Change request #{proposed.pk} opened for {config.environment.name}; "
                        "another publisher or admin reviews it.",
                        messages.SUCCESS,
                    )
                    requested = True
                    continue
                written = True
                services.flag_config_update(
                    config=config,
                    data=environment_change,
                    actor=request.user,
                    source=SOURCE,
                    expected_version=versions.get(environment_id),
                    comment=review.comment if review is not None else "",
                )
            except ValidationError as error:
                raise _in_environment(config.environment, error) from error
            except services.ConflictError as error:
                raise ValidationError(
                    f"{config.environment.name} was changed by someone else since you opened "
                    "the page; nothing was saved. Reload it, then make your change again."
                ) from error
        for formset in formsets:
            _record_changes(formset)
        setattr(request, ONLY_PROPOSED, requested and not written)

    def message_user(self, request: HttpRequest, message: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(request, ONLY_PROPOSED, False) and "was changed successfully" in str(message):
            return  # nothing was changed: the change requests' own messages say what was done
        super().message_user(request, message, *args, **kwargs)

    def _update_flag(self, request: HttpRequest, flag: Flag, data: dict) -> bool:
        """The flag's own fields; where approval is required and the change alters what a
        protected environment serves, those that do are proposed in a change request (the
        rest, its name or tags, are saved). True when a change request was opened."""
        try:
            with transaction.atomic():  # the refused write's savepoint
                services.flag_update(flag=flag, data=data, actor=request.user, source=SOURCE)
            return False
        except PermissionDenied:
            asks = flag.project.require_approval and allows(
                request.user, flag.project, Action.EDIT_FLAGS
            )
            proposed = {k: data[k] for k in approvals.FLAG_REQUEST_FIELDS if k in data}
            if not asks or not proposed:
                raise
        rest = {k: v for k, v in data.items() if k not in approvals.FLAG_REQUEST_FIELDS}
        services.flag_update(flag=flag, data=rest, actor=request.user, source=SOURCE)
        change = approvals.flag_change_request_create(
            flag=flag,
            data=proposed,
            title=f"Change {flag.key}'s variants or settings",
            actor=request.user,
            source=SOURCE,
        )
        self.message_user(
            request,
            f"Change request #{change.pk} opened: this change alters what a protected "
            "environment serves; another publisher or admin reviews it.",
            messages.SUCCESS,
        )
        return True

    def _create(self, request: HttpRequest, form, variants) -> None:
        data = form.cleaned_data
        flag = services.flag_create(
            project=data["project"],
            key=data["key"],
            name=data["name"],
            type=data["type"],
            variants=_variants_from(variants) or None,
            description=data.get("description", ""),
            tags=data.get("tag_names", []),
            owner=data.get("owner"),
            salt=data.get("salt", ""),
            client_side=data.get("client_side", False),
            actor=request.user,
            source=SOURCE,
        )
        adopt(form.instance, flag)
        _record_changes(variants)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        """Nothing: `save_related` writes every row through the services."""


def _in_environment(environment: Environment, error: ValidationError) -> ValidationError:
    """A service's error about one environment's change, saying which environment."""
    if not hasattr(error, "error_dict"):
        return ValidationError([f"{environment.name}: {message}" for message in error.messages])
    return ValidationError(
        [
            f"{environment.name}: {field}: {message}"
            for field, messages in error.message_dict.items()
            for message in messages
        ]
    )


def _loaded_versions(fingerprint: str) -> dict[int, int]:
    """Each configuration's version when the page was opened (see `page_fingerprint`)."""
    _, _, pairs = fingerprint.partition("|")
    versions = {}
    for pair in filter(None, pairs.split(",")):
        environment, _, version = pair.partition("=")
        if environment.isdigit() and version.isdigit():
            versions[int(environment)] = int(version)
    return versions


def _live_forms(formset: BaseInlineFormSet) -> list:
    """The rows the formset describes after the save: not deleted, not an untouched extra."""
    deleted = formset.deleted_forms
    return [
        form
        for form in formset.forms
        if form not in deleted and (form.instance.pk is not None or form.has_changed())
    ]


def _touched(formset: BaseInlineFormSet) -> set[int]:
    """Environments in which the formset adds, changes or deletes a row."""
    touched: set[int] = set()
    for form in formset.forms:
        if form not in formset.deleted_forms and not form.has_changed():
            continue
        if form in formset.deleted_forms and form.instance.pk is None:
            continue
        if form.instance.environment_id is not None:  # a new row's, before it is chosen
            touched.add(form.instance.environment_id)
        chosen = form.cleaned_data.get("environment")
        if chosen:
            touched.add(chosen.pk)
    return touched


def _environment_of(form) -> int:
    chosen = form.cleaned_data.get("environment")
    return chosen.pk if chosen else form.instance.environment_id


def _serving_of(data: dict) -> dict:
    return serving_document(
        data.get("serve_variant", ""), data.get("rollout"), data.get("bucket_by")
    )


def _rule_item(form) -> dict:
    data = form.cleaned_data
    item = {"name": data.get("name", ""), "conditions": data.get("conditions") or []}
    item["serve"] = _serving_of(data)
    if form.instance.pk is not None:
        item["id"] = form.instance.key
    return item


ROW_ITEMS = {
    "rules": _rule_item,
    "targets": lambda form: {
        "variant": form.cleaned_data.get("variant", ""),
        "values": form.cleaned_data.get("values") or [],
    },
    "prerequisites": lambda form: {
        "flag": form.cleaned_data["required_flag"].key,
        "variants": form.cleaned_data.get("variants") or [],
    },
}
ROW_LISTS = {Rule: "rules", Target: "targets", Prerequisite: "prerequisites"}


def _environment_changes(formsets) -> dict[int, dict]:
    """What the inlines change in each environment, as `flag_config_update` takes it.

    A list (rules, targets, prerequisites) is given whole for an environment in which one
    of its rows was added, changed or deleted; rules carry their ids, so they keep them.
    """
    changes: dict[int, dict] = {}
    for formset in formsets:
        if formset.model is FlagConfig:
            for form in formset.forms:
                if form.has_changed():
                    # Only what changed: a change request (or a version) names no more.
                    data, changed = form.cleaned_data, set(form.changed_data)
                    change = {
                        "enabled": data["enabled"],
                        "offVariant": data["off_variant"],
                        "defaultServe": _serving_of(data),
                    }
                    fields = {"enabled": {"enabled"}, "offVariant": {"off_variant"}}
                    change = {
                        name: value
                        for name, value in change.items()
                        if changed & fields.get(name, set())
                        or (name == "defaultServe" and changed - {"enabled", "off_variant"})
                    }
                    if change:
                        changes.setdefault(form.instance.environment_id, {}).update(change)
        elif formset.model in ROW_LISTS:
            name = ROW_LISTS[formset.model]
            live = _live_forms(formset)
            for environment_id in _touched(formset):
                rows = [
                    (form.cleaned_data.get("position") or 0, index, form)
                    for index, form in enumerate(live)
                    if _environment_of(form) == environment_id
                ]
                items = [ROW_ITEMS[name](form) for _, _, form in sorted(rows, key=lambda r: r[:2])]
                changes.setdefault(environment_id, {})[name] = items
    return changes


# --- The flag page's tabs ----------------------------------------------------------------

EVALUATION_DAYS = 7
TAB_SECTIONS = (
    (Rule, "Rules", "The first rule whose conditions all hold serves; lower position first."),
    (Target, "Targets", "These targeting keys get the variant before any rule."),
    (
        Prerequisite,
        "Prerequisites",
        "Served only if each of these flags serves one of its listed variants; otherwise "
        "the off variant.",
    ),
)


def _cells(admin_form: Any) -> dict[str, Any]:
    """An inline row's fields (editable or read-only) by name."""
    cells = {}
    for fieldset in admin_form:
        for line in fieldset:
            for field in line:
                name = field.field["name"] if field.is_readonly else field.field.name
                cells[name] = field
    return cells


def _is_hidden(widget: Any) -> bool:
    # A column's widget is the widget, or {"is_hidden": False} for a read-only field.
    return widget["is_hidden"] if isinstance(widget, dict) else widget.is_hidden


def _table(inline: Any, admin_forms: list, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """One environment's rows of an inline, as the tab's table shows them."""
    columns = [
        column
        for column in inline.fields()
        if not _is_hidden(column["widget"]) and column["name"] not in skip
    ]
    rows = []
    for admin_form in admin_forms:
        cells = _cells(admin_form)
        rows.append(
            {
                "admin_form": admin_form,
                "cells": [cells[c["name"]] for c in columns if c["name"] in cells],
            }
        )
    return {"inline": inline, "columns": columns, "rows": rows}


def _evaluations(config: FlagConfig, since: datetime) -> dict[str, Any]:
    """Evaluations per variant since `since`, with each bar's length (the largest is 100)."""
    counts: dict[str, int] = {}
    for row in exposures.exposure_series(config.environment_id, config.flag.key, since):
        counts[row["variant"]] = counts.get(row["variant"], 0) + row["total"]
    peak = max(counts.values(), default=0) or 1
    total = sum(counts.values())
    bars = [
        {
            "variant": variant or "(none)",
            "count": count,
            "width": round(100 * count / peak, 1),
            "share": summary.percent_text(count, total),
        }
        for variant, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return {
        "bars": bars,
        "total": total,
        "last": exposures.last_evaluated(config.environment_id, config.flag.key),
    }


def _restore_link(
    environment: Environment, may_write: bool, needs_request: bool, may_propose: bool
) -> str:
    """How the History tab offers a version back: "confirm", "propose" or "versions"."""
    if not environment.protected:
        return "versions"
    if may_write and not needs_request:
        return "confirm"
    if needs_request and may_propose:
        return "propose"
    return "versions"  # the versions page, which says what the role may do


def page_tabs(request: HttpRequest, flag: Flag, inline_admin_formsets: list) -> dict[str, Any]:
    """What the flag page's tabs show: each environment's switch, serving and rows (the
    page's formsets, split by environment), and the flag's history, evaluations, scheduled
    changes and audit entries, read through the selectors their own pages use."""
    by_model: dict[type[Model], tuple[Any, dict[int, list]]] = {}
    for inline in inline_admin_formsets:
        if inline.formset.model is Variant:
            continue
        rows: dict[int, list] = {}
        for admin_form in inline:
            if "__prefix__" not in admin_form.form.prefix:  # the empty form for scripts
                rows.setdefault(admin_form.form.instance.environment_id, []).append(admin_form)
        by_model[inline.formset.model] = (inline, rows)
    since = timezone.now() - timedelta(days=EVALUATION_DAYS)
    environments = []
    user = request.user
    may_propose = allows(user, flag.project, Action.CONFIGURE)
    for config in flag.configs.all():  # prefetched, in the environments' order
        environment = config.environment
        may_write = allows(user, flag.project, Action.CONFIGURE, environment)
        needs_request = (
            environment.protected
            and flag.project.require_approval
            and needs_change_request(user, environment)
        )
        # The saved rows the page's formsets read (their forms do not change them).
        rows_here = [
            [f.form.instance for f in by_model[model][1].get(environment.pk, []) if f.original]
            if model in by_model
            else []
            for model in (Rule, Target, Prerequisite)
        ]
        serving = None
        switch = None
        if FlagConfig in by_model:
            inline, config_rows = by_model[FlagConfig]
            mine = config_rows.get(environment.pk, [])
            switch = _cells(mine[0]).get("enabled") if mine else None
            serving = _table(inline, mine, skip=("environment_name", "enabled"))
        sections = [
            {
                **_table(by_model[model][0], by_model[model][1].get(environment.pk, [])),
                "title": title,
                "help": help_text,
            }
            for model, title, help_text in TAB_SECTIONS
            if model in by_model
        ]
        environments.append(
            {
                "environment": environment,
                "config": config,
                "short": summary.short(config, *rows_here),
                "sentence": summary.sentence_html(config, *rows_here),
                "switch": switch,
                "serving": serving,
                "sections": sections,
                "versions": history.versions_of(config)[:10],
                "versions_url": reverse("admin:flags_rollout_versions", args=[config.pk]),
                # Protected environments restore and kill on their confirmation pages, which
                # the tabs link to directly (the versions page's own buttons elsewhere).
                "restore": _restore_link(environment, may_write, needs_request, may_propose),
                "kill_url": (
                    reverse("admin:flags_rollout_confirm_kill", args=[config.pk])
                    if environment.protected and may_write and config.enabled
                    else ""
                ),
                "exposures_url": reverse("admin:flags_rollout_exposures", args=[config.pk]),
                "evaluations": _evaluations(config, since),
                "schedule": list(schedules.schedule_of(config).reverse()[:20]),
            }
        )
    audit = selectors.audit_list(user=request.user, project=flag.project, flag_key=flag.key)
    query = urlencode({"project__id__exact": flag.project_id, "flag_key": flag.key})
    return {
        "environments": environments,
        "formsets": [inline for inline, _ in by_model.values()],
        "audit": list(audit[:30]),
        "audit_url": f"{reverse('admin:flags_auditentry_changelist')}?{query}",
        "evaluation_days": EVALUATION_DAYS,
    }
