"""README's "Clients" snippets, run as written against a live bridge server (tiny Qwen3):
LangChain and LlamaIndex get the vectors the service itself gives."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai import OpenAIEmbedding

from bridge.clients.embedding import EmbeddingClient

TEXTS = ["cats and dogs", "the quick brown fox", "rain on the roof"]
QUERY = "which animals are pets"


@pytest.fixture(scope="module")
def served(qwen3_server):
    with EmbeddingClient(qwen3_server.url) as own:
        yield qwen3_server.url, own.model_info().name, own


def test_langchain_documents_and_queries(served):
    url, model, own = served
    # As in README: check_embedding_ctx_length=False sends the text itself.
    docs = OpenAIEmbeddings(
        model=model, base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False
    )
    queries = OpenAIEmbeddings(
        model=model, base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"input_type": "query"}},
    )  # fmt: skip
    np.testing.assert_allclose(docs.embed_documents(TEXTS), own.embed(TEXTS), atol=1e-5)
    as_query = own.embed([QUERY], input_type="query")[0]
    np.testing.assert_allclose(queries.embed_query(QUERY), as_query, atol=1e-5)
    assert np.dot(docs.embed_query(QUERY), as_query) < 0.999  # the instruction matters

    short = OpenAIEmbeddings(
        model=model, base_url=f"{url}/v1", api_key="unused", check_embedding_ctx_length=False,
        dimensions=32,
    )  # fmt: skip
    np.testing.assert_allclose(short.embed_documents(TEXTS), own.embed(TEXTS, 32), atol=1e-5)


def test_llamaindex_with_model_name(served):
    url, model, own = served
    docs = OpenAIEmbedding(model_name=model, api_base=f"{url}/v1", api_key="unused")
    queries = OpenAIEmbedding(
        model_name=model, api_base=f"{url}/v1", api_key="unused",
        additional_kwargs={"extra_body": {"input_type": "query"}},
    )  # fmt: skip
    np.testing.assert_allclose(docs.get_text_embedding_batch(TEXTS), own.embed(TEXTS), atol=1e-5)
    as_query = own.embed([QUERY], input_type="query")[0]
    np.testing.assert_allclose(queries.get_query_embedding(QUERY), as_query, atol=1e-5)
    short = OpenAIEmbedding(model_name=model, api_base=f"{url}/v1", api_key="u", dimensions=32)
    np.testing.assert_allclose(short.get_text_embedding(TEXTS[0]), own.embed(TEXTS[:1], 32)[0],
                               atol=1e-5)  # fmt: skip


def test_llamaindex_model_takes_only_openai_names(served):
    url, model, _ = served
    with pytest.raises(ValueError, match=model):  # what README warns about: use model_name=
        OpenAIEmbedding(model=model, api_base=f"{url}/v1", api_key="unused")
