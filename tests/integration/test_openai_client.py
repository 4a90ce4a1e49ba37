"""The official ``openai`` client against our server, over real HTTP."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
from openai import OpenAI

from bridge.server.app import ServerSettings

from conftest import live_server, make_service


@pytest.fixture(scope="module")
def keyed_server(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir)
    with live_server(service, ServerSettings(api_keys=["k-one", "k-two"])) as server:
        yield server


def client(server, key="k-one") -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_one_string(keyed_server):
    out = client(keyed_server).embeddings.create(model="tiny", input="cats and dogs")
    assert len(out.data) == 1 and len(out.data[0].embedding) == 64
    assert out.usage.prompt_tokens == 4  # 3 words + end token
    assert out.model == "tiny-qwen3"


def test_list_in_order(keyed_server):
    texts = ["cats", "dogs and fish", "the quick brown fox", "rain"]
    out = client(keyed_server).embeddings.create(model="tiny", input=texts)
    singles = [
        client(keyed_server).embeddings.create(model="tiny", input=t).data[0].embedding
        for t in texts
    ]
    assert [d.index for d in out.data] == [0, 1, 2, 3]
    np.testing.assert_allclose([d.embedding for d in out.data], singles, atol=1e-5)


def test_dimensions(keyed_server):
    out = client(keyed_server).embeddings.create(
        model="tiny", input=["cats", "dogs"], dimensions=32
    )
    vecs = np.array([d.embedding for d in out.data])
    assert vecs.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_base64_equals_float(keyed_server):
    c = client(keyed_server)
    as_float = c.embeddings.create(model="tiny", input=["cats"], encoding_format="float")
    # The client decodes base64 itself when it asks for it; read the raw body to check.
    raw = c.embeddings.with_raw_response.create(
        model="tiny", input=["cats"], encoding_format="base64"
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(decoded, as_float.data[0].embedding, atol=1e-7)


def test_client_default_base64_path(keyed_server):
    # Without encoding_format the openai client asks for base64 and decodes it (numpy present).
    out = client(keyed_server).embeddings.create(model="tiny", input=["cats"])
    explicit = client(keyed_server).embeddings.create(
        model="tiny", input=["cats"], encoding_format="float"
    )
    np.testing.assert_allclose(out.data[0].embedding, explicit.data[0].embedding, atol=1e-7)


def test_second_key_works_and_wrong_key_is_401(keyed_server):
    assert client(keyed_server, "k-two").embeddings.create(model="t", input="cats").data
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError) as err:
        client(keyed_server, "wrong").embeddings.create(model="t", input="cats")
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"


def test_models_route(keyed_server):
    models = client(keyed_server).models.list()
    card = models.data[0].model_dump()
    assert card["id"] == "tiny-qwen3"
    assert card["native_dimension"] == 64
    assert card["dimensions"] == {"min": 32, "max": 64}
    assert card["max_input_tokens"] == 512


def test_foreign_token_ids_are_refused_by_default_with_the_fix(keyed_server):
    """What LangChain's OpenAIEmbeddings sends by default: cl100k ids ('hello world')."""
    with pytest.raises(openai.BadRequestError) as err:
        client(keyed_server).embeddings.create(model="tiny", input=[[15339, 1917]])
    body = err.value.body
    assert body["code"] == "token_ids_not_accepted" and body["param"] == "input"
    assert "check_embedding_ctx_length=False" in body["message"]
    assert "--allow-token-ids" in body["message"]
