"""Segment pages: named, reusable sets of conditions, written by the segment services."""

from __future__ import annotations

from functools import partial

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from flags import selectors, services
from flags.admin.access import ProjectScopedAdmin, project_ids
from flags.admin.flags import SOURCE, adopt
from flags.admin.forms import JSONFieldsMixin, ServiceErrorsAdmin
from flags.admin.widgets import SegmentConditionsWidget, project_vocabulary
from flags.models import Segment
from flags.roles import Action

SEGMENT_CONDITIONS_HELP = (
    "A context is in the segment when every condition holds. In the JSON view, a list such "
    'as [{"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}]. '
    "Segments cannot refer to other segments."
)


# The list names this many flags per segment, then how many more; the segment's page all.
LISTED_USERS = 5


class SegmentChangeList(ChangeList):
    """The list's page of segments, with the flags that use them read in one query."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        users = selectors.segment_users(self.result_list)
        for segment in self.result_list:
            segment.users = users.get(segment.pk, [])


@admin.register(Segment)
class SegmentAdmin(JSONFieldsMixin, ServiceErrorsAdmin, ProjectScopedAdmin):
    list_display = ("key", "name", "project", "used_by", "updated_at")
    list_filter = (("project", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("key", "name", "description")
    list_select_related = ("project",)
    key_list_fields = ("included", "excluded")
    json_widgets = {"conditions": SegmentConditionsWidget}
    help_texts = {
        "conditions": SEGMENT_CONDITIONS_HELP,
        "included": "Targeting keys always in the segment, one per line.",
        "excluded": "Targeting keys never in the segment, one per line (wins over included).",
    }

    class Media:
        css = {"all": ("flags/admin.css",)}

    def get_fields(self, request: HttpRequest, obj: Segment | None = None):
        fields = ["project", "key", "name", "description", "conditions", "included", "excluded"]
        return fields + ["used_by"] if obj is not None else fields

    def get_form(self, request: HttpRequest, obj: Segment | None = None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        widget = form.base_fields["conditions"].widget if "conditions" in form.base_fields else None
        if isinstance(widget, SegmentConditionsWidget):  # a new class per call: safe to set
            projects = [obj.project_id] if obj is not None else project_ids(request, Action.READ)
            widget.vocabulary = partial(project_vocabulary, projects, segments=False)
        return form

    def get_readonly_fields(self, request: HttpRequest, obj: Segment | None = None):
        return ("project", "key", "used_by") if obj is not None else ()

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time: a segment in use stays
        return actions

    def get_changelist(self, request: HttpRequest, **kwargs):
        return SegmentChangeList

    @admin.display(description="used by the rules of")
    def used_by(self, segment: Segment) -> str:
        listed = getattr(segment, "users", None)  # the list's page read them all at once
        if listed is None:
            return ", ".join(services.segment_users(segment)) or "no flag"
        more = len(listed) - LISTED_USERS
        text = ", ".join(listed[:LISTED_USERS]) or "no flag"
        return f"{text} and {more} more" if more > 0 else text

    def save_model(self, request: HttpRequest, obj: Segment, form, change: bool) -> None:
        data = {field: form.cleaned_data[field] for field in services.SEGMENT_FIELDS}
        if change:
            segment = Segment.objects.select_related("project").get(pk=obj.pk)
            services.segment_update(segment=segment, data=data, actor=request.user, source=SOURCE)
            return
        segment = services.segment_create(
            project=obj.project, key=obj.key, data=data, actor=request.user, source=SOURCE
        )
        adopt(obj, segment)

    def delete_model(self, request: HttpRequest, obj: Segment) -> None:
        services.segment_delete(segment=obj, actor=request.user, source=SOURCE)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for segment in queryset:
            self.delete_model(request, segment)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as error:  # in use by a rule: nothing was deleted
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            change = reverse("admin:flags_segment_change", args=[object_id])
            return HttpResponseRedirect(change)
