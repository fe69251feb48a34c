"""`{% sso_login %}`: what the admin's login page needs to know about single sign-on."""

from django import template
from django.conf import settings

from integrations import sso

register = template.Library()


@register.simple_tag
def sso_login() -> dict:
    return {
        "enabled": sso.enabled(),
        "local": sso.local_login(),
        "name": getattr(settings, "OIDC_PROVIDER_NAME", "single sign-on"),
    }
