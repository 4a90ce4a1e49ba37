"""/openapi.json documents each route's body and its error codes (the envelope)."""

from __future__ import annotations

import httpx


def _resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_routes_document_bodies_and_error_codes(qwen3_server):
    spec = httpx.get(qwen3_server.url + "/openapi.json").json()
    wanted = {
        ("/v1/embeddings", "post"): {"200", "400", "401", "413", "429", "503"},
        ("/embed", "post"): {"200", "400", "401", "413", "429", "503"},
        ("/v1/models", "get"): {"200", "401"},
        ("/v1/models/{model_id}", "get"): {"200", "401", "404"},
        ("/ready", "get"): {"200", "503"},
    }
    for (path, method), statuses in wanted.items():
        responses = spec["paths"][path][method]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
        for status in statuses - {"200"}:
            body = responses[status]["content"]["application/json"]["schema"]
            envelope = _resolve(spec, body)
            if path != "/ready":
                assert "error" in envelope["properties"], (path, status)

    ok = spec["paths"]["/v1/embeddings"]["post"]["responses"]["200"]
    body = _resolve(spec, ok["content"]["application/json"]["schema"])
    assert {"object", "data", "model", "usage"} <= set(body["properties"])
    detail = _resolve(
        spec, _resolve(spec, {"$ref": "#/components/schemas/ErrorEnvelope"})["properties"]["error"]
    )
    assert {"message", "type", "param", "code"} <= set(detail["properties"])
