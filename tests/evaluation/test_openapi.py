"""The published OpenAPI schema covers the evaluation endpoints too."""


def test_schema_lists_evaluation_endpoints_with_key_security(client):
    schema = client.get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/evaluate",
        "/api/v1/evaluate/{flag_key}",
        "/ofrep/v1/evaluate/flags",
        "/ofrep/v1/evaluate/flags/{key}",
        "/api/v1/sdk/flags",
        "/api/v1/sdk/events",
        "/api/v1/stream",
    ):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


def test_every_evaluation_endpoint_is_in_the_schema(client):
    """An endpoint added to evaluation/urls.py without its schema fails here."""
    import re

    from django.urls.resolvers import RoutePattern

    from evaluation import urls

    schema = client.get("/api/schema/?format=json").json()
    routes = [
        "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        for pattern in urls.urlpatterns
        if isinstance(pattern.pattern, RoutePattern) and pattern.name != "bench-trivial"
    ]
    assert "/api/v1/sdk/exposures" in routes
    assert [route for route in routes if route not in schema["paths"]] == []
