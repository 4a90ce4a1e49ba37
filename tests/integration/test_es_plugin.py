"""The Elasticsearch ingest plugin on real 9.x and 8.x nodes: a plain _bulk gets its vectors."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.nodes.distribution import ELASTICSEARCH_8_VERSION, ELASTICSEARCH_VERSION
from bridge.server.app import ServerSettings

from conftest import free_port, live_server, local_engine, make_service

DOCS = [
    {"title": "Red apples", "text": "apples are red and sweet"},
    {"title": "same", "text": "same"},  # duplicates collapse, as in bridge-side ingest
    {"text": "only a body here, no title"},
    {"title": 'Tabs\tand "quotes"', "text": "line one\nline two \\ backslash"},
]


def joined(doc: dict) -> str:
    parts = [doc[f] for f in ("title", "text") if isinstance(doc.get(f), str) and doc[f]]
    return "\n".join(dict.fromkeys(parts))


@pytest.fixture(scope="module", params=[ELASTICSEARCH_VERSION, ELASTICSEARCH_8_VERSION])
def es(request) -> Iterator[str]:
    with local_engine(
        "elasticsearch", "BRIDGE_TEST_ES_PLUGIN_URL", heap="512m", version=request.param
    ) as url:
        yield url


def make_index(
    es: str, name: str, url: str | list[str], dim: int, mapping: dict | None = None, **options
) -> None:
    processor = {
        "url": url,
        "dimensions": dim,
        "field": "text",
        "title_field": "title",
        "target_field": "embedding",
        "linger_ms": 5,
        "timeout_ms": 3000,
        **options,
    }
    r = httpx.put(
        f"{es}/_ingest/pipeline/{name}-pipe", json={"processors": [{"bridge_embedding": processor}]}
    )
    assert r.status_code == 200, r.text
    mapping = mapping or {"properties": {"embedding": {"type": "dense_vector", "dims": dim}}}
    r = httpx.put(
        f"{es}/{name}",
        json={
            "settings": {"index.default_pipeline": f"{name}-pipe", "number_of_replicas": 0},
            "mappings": mapping,
        },
    )
    assert r.status_code == 200, r.text


def bulk(es: str, name: str, docs: list[dict]) -> dict:
    lines = []
    for i, doc in enumerate(docs):
        lines += [json.dumps({"index": {"_index": name, "_id": str(i)}}), json.dumps(doc)]
    r = httpx.post(
        f"{es}/_bulk?refresh=true",
        content="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()


def stored_vectors(es: str, name: str, field: str = "embedding") -> dict[str, list]:
    body = {"size": 100, "query": {"match_all": {}}}
    major = int(httpx.get(f"{es}/_nodes/_local").json()["nodes"].popitem()[1]["version"][0])
    if major >= 9:  # 9.x leaves vectors out of _source unless asked
        body["_source"] = {"exclude_vectors": False}
    r = httpx.post(f"{es}/{name}/_search", json=body)
    assert r.status_code == 200, r.text
    return {h["_id"]: h["_source"].get(field) for h in r.json()["hits"]["hits"]}


def test_plain_bulk_gets_the_same_vectors_as_the_api(es, qwen3_server):
    make_index(es, "plugin-vectors", qwen3_server.url, 32)
    result = bulk(es, "plugin-vectors", DOCS)
    assert not result["errors"], result
    stored = stored_vectors(es, "plugin-vectors")
    expected = httpx.post(
        f"{qwen3_server.url}/v1/embeddings",
        json={"input": [joined(d) for d in DOCS], "dimensions": 32, "input_type": "document"},
    ).json()["data"]
    assert len(stored) == len(DOCS)
    for i, item in enumerate(expected):
        got, want = np.asarray(stored[str(i)]), np.asarray(item["embedding"])
        cosine = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
        assert cosine >= 0.9999, (i, cosine)


def test_service_down_fails_every_item_with_url_and_cause(es):
    dead = f"http://127.0.0.1:{free_port()}"
    make_index(es, "plugin-down", [dead, dead + "/"], 32, timeout_ms=800)
    result = bulk(es, "plugin-down", DOCS)
    assert result["errors"]
    for item in result["items"]:
        error = item["index"]["error"]
        assert dead in error["reason"] and "Connect" in error["reason"], error
    count = httpx.get(f"{es}/plugin-down/_count").json()["count"]
    assert count == 0  # no document without its vector


def test_missing_text_fails_unless_ignore_missing(es, qwen3_server):
    make_index(es, "plugin-missing", qwen3_server.url, 32)
    result = bulk(es, "plugin-missing", [{"other": 1}])
    assert "ignore_missing" in result["items"][0]["index"]["error"]["reason"]
    make_index(es, "plugin-ignore", qwen3_server.url, 32, ignore_missing=True)
    assert not bulk(es, "plugin-ignore", [{"other": 1}])["errors"]


@pytest.mark.parametrize("version, message", [("9.5", "exact version"), ("7.17.0", "too old")])
def test_wrong_version_is_refused_clearly(version, message):
    result = CliRunner().invoke(main, ["plugin", "build", "--version", version])
    assert result.exit_code != 0
    assert message in result.output


def test_root_answers_like_a_full_node(es):
    root = httpx.get(f"{es}/")
    assert root.status_code == 200, root.text
    body = root.json()
    assert body["version"]["number"] in (ELASTICSEARCH_VERSION, ELASTICSEARCH_8_VERSION)
    assert body["cluster_uuid"] and body["name"] and body["tagline"]
    if body["version"]["number"].startswith("9."):  # the 9.x client refuses 8.x servers
        from elasticsearch import Elasticsearch

        with Elasticsearch(es) as client:
            assert client.info()["cluster_name"] == body["cluster_name"]


def test_wire_native_makes_a_plain_bulk_embed(es, qwen3_server):
    from types import SimpleNamespace

    from bridge.clients.engine import EngineClient
    from bridge.plugin.pipeline import nodes_without_plugin, wire_native

    model = httpx.get(f"{qwen3_server.url}/v1/models").json()["data"][0]["id"]
    meta = SimpleNamespace(
        dim=32,
        model=model,
        text_field="text",
        vector_field="embedding",
        title_field="title",
        passages=None,
    )
    mapping = {"properties": {"embedding": {"type": "dense_vector", "dims": 32}}}
    assert httpx.put(f"{es}/plugin-wired", json={"mappings": mapping}).status_code == 200
    engine = EngineClient(es)
    assert nodes_without_plugin(engine) == []
    name = wire_native(engine, "plugin-wired", meta, [qwen3_server.url])
    settings = httpx.get(f"{es}/plugin-wired/_settings").json()["plugin-wired"]["settings"]
    assert settings["index"]["default_pipeline"] == name
    result = bulk(es, "plugin-wired", DOCS[:2])
    assert not result["errors"], result
    assert all(len(v) == 32 for v in stored_vectors(es, "plugin-wired").values())


def set_keystore_key(es: str, key: str) -> None:
    """``elasticsearch-keystore add bridge.api_key`` on the local node, then a reload."""
    import subprocess

    from bridge.nodes import cluster
    from bridge.nodes.distribution import elasticsearch
    from bridge.nodes.jdk import find_java

    state = cluster.status("elasticsearch", int(es.rsplit(":", 1)[1]))
    assert state is not None, "the key rotation test needs a node started by bridge engine"
    dist = elasticsearch(state.version)
    home = cluster.run_dir() / "installs" / dist.home_name
    conf = Path(state.nodes[0].dir) / "config"
    java = find_java(dist.java_min, dist.java_max)
    env = {"PATH": "/usr/bin:/bin", "ES_JAVA_HOME": str(java.home), "ES_PATH_CONF": str(conf)}
    # the tool refuses to change the keystore's owner: run it as the node's user
    as_owner = {"user": conf.owner(), "group": conf.group()} if os.geteuid() == 0 else {}
    tool = [str(home / "bin" / "elasticsearch-keystore")]
    if not (conf / "elasticsearch.keystore").exists():
        subprocess.run([*tool, "create"], env=env, check=True, capture_output=True, **as_owner)
    added = subprocess.run(
        [*tool, "add", "-x", "-f", "bridge.api_key"],
        input=key,
        text=True,
        env=env,
        capture_output=True,
        **as_owner,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    reload = httpx.post(f"{es}/_nodes/reload_secure_settings", json={}, timeout=30).json()
    assert all("reload_exception" not in n for n in reload["nodes"].values()), reload


def test_api_key_rotation_through_the_keystore(es, tiny_qwen3_dir, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("first-key\n")
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512)
    with live_server(service, ServerSettings(api_key_file=str(keys))) as server:
        make_index(es, "plugin-keys", server.url, 32)
        set_keystore_key(es, "wrong-key")
        refused = bulk(es, "plugin-keys", DOCS[:1])["items"][0]["index"]["error"]
        assert "401" in refused["reason"] and "bridge.api_key" in refused["reason"], refused
        set_keystore_key(es, "first-key")
        assert not bulk(es, "plugin-keys", DOCS[:1])["errors"]
        keys.write_text("second-key\n")  # the bridge rotates; the old key is refused
        time.sleep(1.5)
        assert bulk(es, "plugin-keys", DOCS[1:2])["errors"]
        set_keystore_key(es, "second-key")
        assert not bulk(es, "plugin-keys", DOCS[2:3])["errors"]


def test_too_many_passages_splits_the_batch(es, tiny_qwen3_dir):
    """A service that takes 6 inputs (passages) per request: the plugin's batch of 6
    documents, which make more passages, is answered 413 too_many_passages, split and sent
    again in halves, so every document gets its passages; the one document that alone
    makes more than 6 fails alone, with the service's message."""
    import random

    from tiny_qwen3 import WORDS

    rng = random.Random(11)
    docs = [{"text": " ".join(rng.choices(WORDS, k=30))} for _ in range(5)]
    docs.insert(3, {"text": " ".join(rng.choices(WORDS, k=400))})  # alone over the limit
    spec = {"max_tokens": 24, "overlap": 4}
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512)
    with live_server(service, ServerSettings(max_inputs_per_request=6)) as server:
        alone = [
            httpx.post(f"{server.url}/v1/embeddings", timeout=60,
                       json={"input": [d["text"]], "dimensions": 32, "passages": spec})
            for d in docs
        ]  # fmt: skip
        assert [r.status_code for r in alone].count(413) == 1 and alone[3].status_code == 413
        assert sum(len(r.json()["data"][0]["passages"]) for r in alone if r.is_success) > 6

        passages = {"type": "nested", "properties": {
            "embedding": {"type": "dense_vector", "dims": 32},
            "start": {"type": "integer"}, "end": {"type": "integer"}}}  # fmt: skip
        make_index(es, "plugin-split", server.url, 32, {"properties": {"passages": passages}},
                   linger_ms=300, timeout_ms=20000, passage_tokens=24, passage_overlap=4,
                   target_field="passages")  # fmt: skip
        result = bulk(es, "plugin-split", docs)

    failed = [i for i, item in enumerate(result["items"]) if "error" in item["index"]]
    assert failed == [3], result
    reason = result["items"][3]["index"]["error"]["reason"]
    assert "413" in reason and "the limit per request is 6" in reason, reason
    stored = stored_vectors(es, "plugin-split", field="passages")
    for i, answer in enumerate(alone):
        if i == 3:
            continue
        want = answer.json()["data"][0]["passages"]
        got = stored[str(i)]
        assert [(p["start"], p["end"]) for p in got] == [(p["start"], p["end"]) for p in want]
        for g, w in zip(got, want, strict=True):
            a, b = np.asarray(g["embedding"]), np.asarray(w["embedding"])
            assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999
