"""The app that makes `{% load flagclient %}` available."""

from django.apps import AppConfig


class FlagClientConfig(AppConfig):
    name = "flagclient.django"
    label = "flagclient"
    verbose_name = "Feature flags (client)"
