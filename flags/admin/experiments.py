"""Metric and experiment pages: definitions written by the experiment services, and each
experiment's results (flags.experiments) with its sample-ratio and split-change warnings."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from flags import services
from flags.admin.access import ProjectScopedAdmin, projects
from flags.admin.confirmations import _error_text, row_id
from flags.admin.flags import SOURCE, adopt
from flags.admin.forms import ServiceErrorsAdmin
from flags.experiment_results import results_context
from flags.models import Environment, Experiment, Flag, Metric
from flags.services.experiments import FIXED_ONCE_STARTED

# --- Metrics ----------------------------------------------------------------------------


@admin.register(Metric)
class MetricAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    list_display = (
        "key",
        "name",
        "project",
        "event",
        "kind",
        "aggregation",
        "window_days",
        "better",
    )
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), "kind")
    search_fields = ("key", "name", "event")
    list_select_related = ("project",)
    fields = (
        "project",
        "key",
        "name",
        "description",
        "event",
        "kind",
        "aggregation",
        "window_days",
        "better",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Metric | None = None):
        return ("project", "key") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Metric | None = None) -> bool:
        return False  # experiments are read on it: a metric is redefined, never deleted

    def save_model(self, request: HttpRequest, obj: Metric, form, change: bool) -> None:
        data = {f: form.cleaned_data[f] for f in services.METRIC_FIELDS if f in form.cleaned_data}
        if change:
            metric = Metric.objects.select_related("project").get(pk=obj.pk)
            services.metric_update(metric=metric, data=data, actor=request.user, source=SOURCE)
            return
        metric = services.metric_create(
            project=obj.project, key=obj.key, data=data, actor=request.user, source=SOURCE
        )
        adopt(obj, metric)


# --- Experiments ------------------------------------------------------------------------


@admin.register(Experiment)
class ExperimentAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    list_display = ("key", "name", "flag", "environment", "status", "starts_at", "ends_at")
    list_filter = (
        ("project", admin.RelatedOnlyFieldListFilter),
        ("flag", admin.RelatedOnlyFieldListFilter),
        ("environment", admin.RelatedOnlyFieldListFilter),
        "status",
    )
    search_fields = ("key", "name", "flag__key")
    list_select_related = ("project", "flag", "environment")
    change_form_template = "admin/flags/experiment/change_form.html"

    class Media:
        css = {"all": ("flags/admin.css",)}

    def get_fields(self, request: HttpRequest, obj: Experiment | None = None):
        fields = ["project", "key", "name", "flag", "environment", "control_variant"]
        fields += ["metrics", "hypothesis"]
        return fields + ["status", "starts_at", "ends_at"] if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None):
        if obj is None:
            return ()
        fixed = ("project", "key", "status", "starts_at", "ends_at")
        if obj.status == Experiment.Status.DRAFT:
            return fixed
        return (*fixed, *FIXED_ONCE_STARTED)

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return False  # stopped, never deleted: its results stay readable

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        editable = projects(request, self.edit_action)
        if db_field.related_model is Flag:
            flags = Flag.objects.filter(project__in=editable, archived=False)
            kwargs["queryset"] = flags.select_related("project")
        elif db_field.related_model is Environment:
            kwargs["queryset"] = Environment.objects.filter(project__in=editable).select_related(
                "project"
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request: HttpRequest, **kwargs):
        if db_field.related_model is Metric:
            editable = projects(request, self.edit_action)
            kwargs["queryset"] = Metric.objects.filter(project__in=editable)
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if field is not None:
            field.required = False
            field.help_text = "The metrics the variants are compared on; more can be added later."
        return field

    # --- Saving through the services

    def save_model(self, request: HttpRequest, obj: Experiment, form, change: bool) -> None:
        cleaned = form.cleaned_data
        data = {f: cleaned[f] for f in services.EXPERIMENT_FIELDS if f in cleaned}
        if change:
            experiment = Experiment.objects.select_related("project").get(pk=obj.pk)
            services.experiment_update(
                experiment=experiment, data=data, actor=request.user, source=SOURCE
            )
            return
        experiment = services.experiment_create(
            project=obj.project, key=obj.key, data=data, actor=request.user, source=SOURCE
        )
        adopt(obj, experiment)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        """The metrics were set by the service with the rest; nothing is written here."""

    # --- The page: results above the form; start and stop

    def change_view(self, request, object_id, form_url="", extra_context=None):
        experiment = self.get_object(request, object_id)
        if experiment is None:
            raise Http404("No such experiment.")
        context = {
            **(extra_context or {}),
            "results": results_context(experiment),
            "may_run": self.has_change_permission(request, experiment),
        }
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/start/", view(self.start_view), name="flags_experiment_start"),
            path("<int:pk>/stop/", view(self.stop_view), name="flags_experiment_stop"),
            *super().get_urls(),
        ]

    def _act(self, request: HttpRequest, pk: int, write, success: str) -> HttpResponse:
        experiment = get_object_or_404(
            self.get_queryset(request).select_related("flag", "environment"),
            pk=row_id(pk, "pk"),
        )
        try:
            write(experiment=experiment, actor=request.user, source=SOURCE)
        except (ValidationError, PermissionDenied) as error:
            self.message_user(request, _error_text(error), messages.ERROR)
        else:
            self.message_user(request, success, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:flags_experiment_change", args=[pk]))

    def start_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return require_POST(self._act)(
            request, pk, services.experiment_start, "Started: units first exposed from now count."
        )

    def stop_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        return require_POST(self._act)(
            request, pk, services.experiment_stop, "Stopped: units exposed from now do not count."
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("project", "flag", "environment")
