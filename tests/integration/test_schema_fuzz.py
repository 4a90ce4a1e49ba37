"""schemathesis against the service's own OpenAPI schema over real HTTP: never a 5xx.

Hypothesis generates valid and invalid bodies, headers and paths for every operation
(``/v1/embeddings``, ``/embed``, ``/v1/models`` …); each answer must be below 500 and,
for errors, carry the OpenAI error envelope.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from conftest import live_server, make_service


@pytest.fixture(scope="module")
def api_schema(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512)
    with live_server(service) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        schema.config.base_url = server.url  # the schema names no server
        yield schema


def check_operation(operation, mode: schemathesis.GenerationMode, examples: int) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        response = case.call(timeout=60)
        where = (case.method, case.path, case.body, response.text[:300])
        assert response.status_code < 500, where
        if response.status_code >= 400 and case.path.startswith("/v1"):
            error = response.json()["error"]  # the OpenAI envelope
            assert {"message", "type", "param", "code"} <= set(error), where

    run()


def test_no_server_errors(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {"/v1/embeddings", "/embed", "/v1/models"} <= {op.path for op in operations}
    negative = 0
    for operation in operations:
        post = operation.method.upper() == "POST"
        check_operation(operation, schemathesis.GenerationMode.POSITIVE, 100 if post else 20)
        try:  # invalid requests; an operation without parameters has none to break
            check_operation(operation, schemathesis.GenerationMode.NEGATIVE, 100 if post else 20)
            negative += 1
        except Unsatisfiable:
            assert not post, f"no invalid request generated for {operation.path}"
    assert negative >= 2
