"""Routes of the evaluation endpoints: native, OFREP and the SDK document."""

import os

from django.urls import path, re_path

from evaluation import event_views, exposure_views, streams, views

urlpatterns = [
    path("api/v1/evaluate", views.evaluate_flags, name="evaluate-flags"),
    path("api/v1/evaluate/<str:flag_key>", views.evaluate_flag, name="evaluate-flag"),
    path("api/v1/sdk/flags", views.sdk_flags, name="sdk-flags"),
    path("api/v1/sdk/exposures", exposure_views.sdk_exposures, name="sdk-exposures"),
    path("api/v1/sdk/events", event_views.sdk_events, name="sdk-events"),
    path("api/v1/stream", streams.stream, name="stream"),
    path("ofrep/v1/evaluate/flags", views.ofrep_flags, name="ofrep-flags"),
    path("ofrep/v1/evaluate/flags/<str:key>", views.ofrep_flag, name="ofrep-flag"),
    # Anything else under the evaluation prefixes (an empty or slashed flag key, a typo)
    # is a JSON 404 in the endpoint's own shape, never the HTML page.
    re_path(r"^ofrep/", views.ofrep_not_found),
    re_path(r"^api/v1/evaluate/", views.native_not_found),
]

# The benchmark's floor (bench/http.py); never routed unless the variable is set.
if os.environ.get("BENCH_TRIVIAL_VIEW") == "1":
    urlpatterns.append(path("bench/trivial", views.trivial, name="bench-trivial"))
