"""URLs of the integrations: the single sign-on round trip and the trigger endpoint."""

from django.urls import path

from integrations import sso, views

urlpatterns = [
    path("oidc/authenticate/", sso.LoginView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.CallbackView.as_view(), name="oidc_authentication_callback"),
    path("api/v1/triggers/<str:uid>", views.fire, name="trigger-fire"),
]
