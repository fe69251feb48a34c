"""Form pieces of the admin: readable JSON fields, key lists, and service errors on forms.

Every text box is checked like an API body (flags.validation): JSON nested too deep, a NUL
character or a lone surrogate anywhere is a form error on that field, never a 500.
"""

from __future__ import annotations

import json
import re
import weakref
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.core.exceptions import NON_FIELD_ERRORS, ObjectDoesNotExist, ValidationError
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.utils.text import capfirst

from flags.validation import find_text_problem, load_json

JSON_WIDGET_ATTRS = {"class": "flags-json", "rows": 4, "cols": 40, "spellcheck": "false"}

if TYPE_CHECKING:  # the admin classes the mixins below are mixed into
    _BaseAdmin = admin.options.BaseModelAdmin[Any]
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _BaseAdmin = _ModelAdmin = object


def _problem_message(path: str, problem: str) -> str:
    return f"{path}: {problem}" if path else problem


def parse_json_box(text: str) -> Any:
    """JSON typed in a text box; a ValidationError (code "invalid" for bad JSON) saying why."""
    try:
        return load_json(text, "")
    except ValidationError as error:
        path, [first] = next(iter(error.error_dict.items()))
        raise ValidationError(_problem_message(path, str(first.message)), code=first.code) from None


class PrettyJSONField(forms.JSONField):
    """JSON shown indented; an emptied box means the model field's empty value ([] or {})."""

    def __init__(self, *, empty_json: Any = None, **kwargs) -> None:
        self.empty_json = empty_json
        kwargs.setdefault("widget", forms.Textarea(attrs=JSON_WIDGET_ATTRS))
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        if not self.disabled and value in self.empty_values and self.empty_json is not None:
            return type(self.empty_json)()
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return super().to_python(value)
        converted = parse_json_box(value)
        return forms.fields.JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        try:
            return parse_json_box(data)
        except ValidationError:  # shown again as typed, with the error next to it
            return forms.fields.InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2)

    def has_changed(self, initial: Any, data: Any) -> bool:
        # Django's JSONField compares a disabled field's missing data with its initial value.
        return not self.disabled and super().has_changed(initial, data)


class VariantValueField(PrettyJSONField):
    """A variant's value: JSON, or plain text taken as a string (so `blue` means "blue")."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except ValidationError as error:
            if error.code != "invalid":  # JSON, but nested too deep or holding a NUL
                raise
            return value.strip()

    def bound_data(self, data: Any, initial: Any) -> Any:
        bound = super().bound_data(data, initial)
        return data if isinstance(bound, forms.fields.InvalidJSONInput) else bound


class KeyListField(forms.Field):
    """A list of keys, typed one per line (or comma-separated, or as a JSON list)."""

    widget = forms.Textarea(attrs={**JSON_WIDGET_ATTRS, "rows": 3})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> Any:
        if isinstance(value, list):
            return value
        text = (value or "").strip()
        if text.startswith("["):
            try:
                return parse_json_box(text)
            except ValidationError as error:
                if error.code != "invalid":
                    raise
                raise ValidationError("Enter keys one per line, or a valid JSON list.") from error
        return [item.strip() for item in re.split(r"[\n,]+", text) if item.strip()]

    def validate(self, value: Any) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")


def json_formfield(
    db_field: models.Field,
    key_list_fields: tuple[str, ...],
    widget: type[forms.Widget] | None = None,
) -> forms.Field | None:
    """The admin's form field for a JSONField, or None for any other field."""
    if not isinstance(db_field, models.JSONField):
        return None
    required = not db_field.blank
    label = capfirst(db_field.verbose_name)
    if db_field.name in key_list_fields:
        return KeyListField(required=required, label=label, help_text=db_field.help_text)
    default = db_field.get_default()
    empty = default if isinstance(default, list | dict) else None
    return PrettyJSONField(
        empty_json=empty,
        required=required,
        label=label,
        help_text=db_field.help_text,
        **({"widget": widget()} if widget is not None else {}),
    )


class JSONFieldsMixin(_BaseAdmin):
    """JSON fields as readable, indented text boxes; lists of keys one per line."""

    key_list_fields: tuple[str, ...] = ()
    help_texts: dict[str, str] = {}
    json_widgets: dict[str, type[forms.Widget]] = {}  # e.g. the condition builder

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        field = json_formfield(db_field, self.key_list_fields, self.json_widgets.get(db_field.name))
        if field is None:
            field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.help_texts:
            field.help_text = self.help_texts[db_field.name]
        return field


class AdminForm(forms.ModelForm):
    """The base of every admin form here.

    Errors a model's `clean()` gives for a field the form does not show become the form's
    own errors instead of a crash; an error a service raised while saving (see
    `ServiceErrorsAdmin`) is shown as if the form had found it.
    """

    service_error: ValidationError | None = None

    def clean(self) -> dict[str, Any]:
        super().clean()  # the stubs say None; Django returns cleaned_data
        cleaned = self.cleaned_data
        for name, value in list(cleaned.items()):
            found = find_text_problem(value)
            if found is not None:
                self.add_error(name, _problem_message(*found))
        if self.service_error is not None:
            self._update_errors(self.service_error)
        return cleaned

    # `_post_clean` and `_update_errors` are Django's form hooks the stubs do not declare.
    def _post_clean(self) -> None:
        try:
            super()._post_clean()  # type: ignore[misc]
        except ObjectDoesNotExist:
            # The model's checks need a row the form could not give (e.g. no environment
            # chosen); that field's own error says what to fix.
            if not self.errors:
                self.add_error(None, "Fill in every required field.")

    def _update_errors(self, errors: ValidationError) -> None:
        if not hasattr(errors, "error_dict"):
            return super()._update_errors(errors)  # type: ignore[misc]
        shown: dict[str, list[ValidationError]] = {}
        elsewhere: list[str] = []
        for field, messages in errors.error_dict.items():
            if field == NON_FIELD_ERRORS or (
                field in self.fields and not self.fields[field].disabled
            ):
                shown[field] = messages
            else:
                label = self.fields[field].label if field in self.fields else field
                elsewhere += [f"{label}: {message}" for error in messages for message in error]
        if elsewhere:
            shown.setdefault(NON_FIELD_ERRORS, []).extend(ValidationError(elsewhere).error_list)
        return super()._update_errors(ValidationError(shown))  # type: ignore[misc]


# The error a service raised while saving, for the second build of the page (see below).
_service_errors: weakref.WeakKeyDictionary[HttpRequest, ValidationError] = (
    weakref.WeakKeyDictionary()
)


class ServiceErrorsAdmin(_ModelAdmin):
    """Turn a ValidationError raised by a service while saving into a form error.

    Saving runs inside the admin's transaction, so the error has rolled everything back;
    the page is then built again from the same POST, with the error on the form.
    """

    form: type[forms.ModelForm[Any]] = AdminForm

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as error:
            _service_errors[request] = error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Any]]:
        form = super().get_form(request, obj, change, **kwargs)
        error = _service_errors.get(request)
        if error is None:
            return form
        return type(form.__name__, (form,), {"service_error": error})
