"""URL map of the management API under /api/v1/ (projects and what they hold, by key)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from flags.api import views

PROJECT = "projects/<str:project_key>"
FLAG = f"{PROJECT}/flags/<str:flag_key>"

listing = {"get": "list", "post": "create"}
detail = {"get": "retrieve", "patch": "partial_update"}

urlpatterns = [
    path("auth/token/", TokenObtainPairView.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("projects", views.ProjectViewSet.as_view(listing), name="projects"),
    path("projects/<str:key>", views.ProjectViewSet.as_view({"get": "retrieve"}), name="project"),
    path(f"{PROJECT}/environments", views.EnvironmentViewSet.as_view(listing), name="environments"),
    path(
        f"{PROJECT}/environments/<str:key>",
        views.EnvironmentViewSet.as_view({"patch": "partial_update"}),
        name="environment",
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
