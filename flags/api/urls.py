"""URL map of the management API under /api/v1/ (projects and what they hold, by key)."""

from typing import Any

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from flags.api import auth, imports, rollouts, views

PROJECT = "projects/<str:project_key>"
FLAG = f"{PROJECT}/flags/<str:flag_key>"

listing: dict[str, Any] = {"get": "list", "post": "create"}
detail: dict[str, Any] = {"get": "retrieve", "patch": "partial_update"}

# Safe rollouts (flags.api.rollouts): versions, change requests, schedules, the kill switch.
CONFIG = f"{FLAG}/environments/<str:environment_key>"
REQUESTS = f"{CONFIG}/change-requests"
rollout_urlpatterns = [
    path(f"{CONFIG}/versions", rollouts.HistoryViewSet.as_view({"get": "list"}), name="versions"),
    path(
        f"{CONFIG}/versions/<int:number>/restore",
        rollouts.HistoryViewSet.as_view({"post": "restore"}),
        name="version-restore",
    ),
    path(f"{CONFIG}/kill", rollouts.HistoryViewSet.as_view({"post": "kill"}), name="flag-kill"),
    path(REQUESTS, rollouts.ChangeRequestViewSet.as_view(listing), name="change-requests"),
    # Changes that alter what protected environments serve without writing to one.
    path(
        f"{FLAG}/change-requests",
        rollouts.ChangeRequestViewSet.as_view({"get": "list", "post": "create_for_flag"}),
        name="flag-change-requests",
    ),
    path(
        f"{PROJECT}/segments/<str:segment_key>/change-requests",
        rollouts.ChangeRequestViewSet.as_view({"get": "list", "post": "create_for_segment"}),
        name="segment-change-requests",
    ),
    path(
        f"{PROJECT}/change-requests",
        rollouts.ChangeRequestViewSet.as_view({"get": "list"}),
        name="project-change-requests",
    ),
    *[
        path(
            f"{prefix}/<str:pk>{suffix}",
            rollouts.ChangeRequestViewSet.as_view({method: handler}),
            name=f"change-request{suffix.replace('/', '-')}{'' if prefix == REQUESTS else '-all'}",
        )
        for prefix in (REQUESTS, f"{PROJECT}/change-requests")
        for suffix, method, handler in (
            ("", "get", "retrieve"),
            ("/approve", "post", "approve"),
            ("/reject", "post", "reject"),
            ("/rebase", "post", "rebase"),
            ("/cancel", "post", "cancel"),
        )
    ],
    path(f"{CONFIG}/schedule", rollouts.ScheduleViewSet.as_view(listing), name="schedule"),
    path(
        f"{CONFIG}/schedule/<str:pk>/cancel",
        rollouts.ScheduleViewSet.as_view({"post": "cancel"}),
        name="schedule-cancel",
    ),
    path(
        f"{CONFIG}/rollouts",
        rollouts.ScheduleViewSet.as_view({"post": "rollout"}),
        name="rollout",
    ),
    path(f"{CONFIG}/guards", rollouts.GuardViewSet.as_view(listing), name="guards"),
    path(
        f"{CONFIG}/guards/<str:pk>",
        rollouts.GuardViewSet.as_view({**detail, "delete": "destroy"}),
        name="guard",
    ),
]

urlpatterns = [
    path("auth/token/", auth.TokenView.as_view(), name="token"),
    path("auth/token/refresh/", auth.RefreshView.as_view(), name="token-refresh"),
    path("projects", views.ProjectViewSet.as_view(listing), name="projects"),
    path("projects/<str:key>", views.ProjectViewSet.as_view({"get": "retrieve"}), name="project"),
    path(f"{PROJECT}/environments", views.EnvironmentViewSet.as_view(listing), name="environments"),
    path(
        f"{PROJECT}/environments/<str:environment_key>/import",
        imports.ImportViewSet.as_view({"post": "create"}),
        name="environment-import",
    ),
    path(
        f"{PROJECT}/environments/<str:key>",
        views.EnvironmentViewSet.as_view({"patch": "partial_update"}),
        name="environment",
    ),
    path(
        f"{PROJECT}/environments/<str:key>/secure-mode-secret",
        views.EnvironmentViewSet.as_view({"post": "secure_mode_secret"}),
        name="environment-secure-mode-secret",
    ),
    path(f"{PROJECT}/flags", views.FlagViewSet.as_view(listing), name="flags"),
    path(f"{FLAG}", views.FlagViewSet.as_view(detail), name="flag"),
    path(
        f"{FLAG}/environments/<str:environment_key>",
        views.FlagConfigViewSet.as_view(detail),
        name="flag-config",
    ),
    path(
        f"{FLAG}/environments/<str:environment_key>/toggle",
        views.FlagConfigViewSet.as_view({"post": "toggle"}),
        name="flag-toggle",
    ),
    *rollout_urlpatterns,
    path(f"{PROJECT}/segments", views.SegmentViewSet.as_view(listing), name="segments"),
    path(
        f"{PROJECT}/segments/<str:key>",
        views.SegmentViewSet.as_view({**detail, "delete": "destroy"}),
        name="segment",
    ),
    path(f"{PROJECT}/tags", views.TagViewSet.as_view({"get": "list"}), name="tags"),
    path(f"{PROJECT}/api-keys", views.ApiKeyViewSet.as_view(listing), name="api-keys"),
    path(
        f"{PROJECT}/api-keys/<str:pk>/revoke",
        views.ApiKeyViewSet.as_view({"post": "revoke"}),
        name="api-key-revoke",
    ),
    path(f"{PROJECT}/members", views.MembershipViewSet.as_view(listing), name="members"),
    path(
        f"{PROJECT}/members/<str:username>",
        views.MembershipViewSet.as_view({"delete": "destroy"}),
        name="member",
    ),
    path("audit", views.AuditViewSet.as_view({"get": "list"}), name="audit"),
]

schema_urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]
