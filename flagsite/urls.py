"""The service's URL map: probes, the Admin UI at /admin, the REST API under /api/v1."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from flags.api.urls import schema_urlpatterns
from flagsite import health, metrics

# Uncaught errors: a JSON 500 under /api/ and /ofrep/, a 503 naming a store that is away.
handler500 = "flagsite.failures.handler500"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("", include("evaluation.urls")),
    path("", include("integrations.urls")),
    path("api/v1/", include("flags.api.urls")),
    path("api/", include(schema_urlpatterns)),
]

if settings.ADMIN_ENABLED:
    admin.site.site_header = "Feature flags"
    admin.site.site_title = "Feature flags"
    admin.site.index_title = "Projects, flags and rollouts"
    urlpatterns += [
        path("admin/", admin.site.urls),
        path("", RedirectView.as_view(url="/admin/", permanent=False)),
    ]
