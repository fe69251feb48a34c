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
