"""URLs of the integrations: the single sign-on round trip, the trigger endpoint, and the
management API of webhooks and triggers."""

from django.urls import path

from integrations import api, sso, views

PROJECT = "api/v1/projects/<str:project_key>"

urlpatterns = [
    path("oidc/authenticate/", sso.LoginView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("api/v1/triggers/<str:uid>", views.fire, name="trigger-fire"),
    path(
        f"{PROJECT}/webhooks",
        api.WebhookViewSet.as_view({"get": "list", "post": "create"}),
        name="webhooks",
    ),
    path(
        f"{PROJECT}/webhooks/<str:pk>",
        api.WebhookViewSet.as_view(
            {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}
        ),
        name="webhook",
    ),
    path(
        f"{PROJECT}/webhooks/<str:pk>/deliveries",
        api.WebhookViewSet.as_view({"get": "deliveries"}),
        name="webhook-deliveries",
    ),
    path(
        f"{PROJECT}/triggers",
        api.TriggerViewSet.as_view({"get": "list", "post": "create"}),
        name="triggers",
    ),
    path(
        f"{PROJECT}/triggers/<str:uid>/revoke",
        api.TriggerViewSet.as_view({"post": "revoke"}),
        name="trigger-revoke",
    ),
]
