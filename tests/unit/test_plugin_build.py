"""Unit tests of the plugin build's version checks and the pipeline body (no JVM, no node)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bridge.plugin.build import PluginBuildError, source_hash, target
from bridge.plugin.pipeline import PROCESSOR, pipeline_body


@pytest.mark.parametrize("version, release", [("9.5.4", 21), ("8.19.21", 17)])
def test_each_major_gets_its_java_release(version, release):
    assert target(version).java_release == release
    assert target(version).variant == f"es{version[0]}"


@pytest.mark.parametrize("version", ["9.5", "latest", "10.0.0", "7.17.0", "9.x.1"])
def test_unsupported_versions_are_refused(version):
    with pytest.raises(PluginBuildError):
        target(version)


def test_source_hash_is_stable():
    assert source_hash() == source_hash() and len(source_hash()) == 16


def test_pipeline_body_embeds_title_and_body_like_bridge_side_ingest():
    meta = SimpleNamespace(
        dim=128, model="m", text_field="body", vector_field="vec", title_field="head",
        passages={"max_tokens": 200, "overlap": 20},
    )  # fmt: skip
    options = pipeline_body(meta, ["http://a:8000", "http://b:8000"])["processors"][0][PROCESSOR]
    assert options["field"] == "body" and options["title_field"] == "head"
    assert (options["passage_tokens"], options["passage_overlap"]) == (200, 20)
    assert options["target_field"] == "vec" and options["dimensions"] == 128
    assert options["url"] == ["http://a:8000", "http://b:8000"]
    assert "api_key" not in options  # the key lives in the keystore only
    meta.passages, meta.title_field = None, None
    options = pipeline_body(meta, ["http://a:8000"])["processors"][0][PROCESSOR]
    assert options["passage_tokens"] == 0 and options["title_field"] == ""
