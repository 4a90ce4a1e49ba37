"""The reindex planner from gathered facts, no engine: every method choice and refusal."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.clients.embedding import ModelInfo
from bridge.index.meta import IndexMeta
from bridge.index.reindex.checkpoint import Checkpoint, Phase
from bridge.index.reindex.plan import Facts, ReindexError, Request, plan

QWEN = ModelInfo("qwen3", 1024, 32, 1024, 8192)
SOURCE = IndexMeta(alias="docs", dim=1024, model="qwen3", created_at=1.0)


def facts(**changes) -> Facts:
    base = Facts(
        current=SOURCE,
        alias_indices={"docs-d1024"},
        target=None,
        target_exists=False,
        resumed_source=None,
        counts={"docs-d1024": 7},
        service=QWEN,
        service_error=None,
        scripted_reindex=True,
        now=2.0,
    )
    return replace(base, **changes)


def checkpoint(method: str = "scroll", phase: str = "fill") -> dict:
    """As an older version stored it: a plain dict with a string phase."""
    return {"source": "docs-d1024", "method": method, "phase": phase, "started_at": 5,
            "cursor": "d9", "task": None, "copied": 3, "since": None}  # fmt: skip


def test_truncatable_vectors_are_truncated_on_the_engine():
    chosen = plan(facts(), Request("docs", 256))
    assert chosen.method == "engine"
    assert (
        chosen.reason == "the service gives qwen3 at 256 dimensions as the first 256 "
        "values of its 1024, re-normalised"
    )
    assert chosen.target.index == "docs-d256" and chosen.target.model == "qwen3"
    assert chosen.target.created_at == 2.0 and chosen.target.reindex is None
    assert chosen.documents == 7 and chosen.resume is None


def test_without_scripted_reindex_the_bridge_truncates():
    chosen = plan(facts(scripted_reindex=False), Request("docs", 256))
    assert chosen.method == "scroll" and "reindex/painless" in chosen.reason


def test_re_embed_when_asked():
    chosen = plan(facts(), Request("docs", 256, prefer="re-embed"))
    assert chosen.method == "re-embed" and chosen.reason == "--re-embed"


def test_a_wider_target_is_re_embedded():
    chosen = plan(facts(current=replace(SOURCE, dim=256), alias_indices={"docs-d256"},
                        counts={"docs-d256": 1}), Request("docs", 512))  # fmt: skip
    assert chosen.method == "re-embed" and "cannot give 512" in chosen.reason


def test_another_model_is_re_embedded_with_the_service_model():
    other = replace(QWEN, name="qwen3-4b")
    chosen = plan(facts(service=other), Request("docs", 256))
    assert chosen.method == "re-embed" and "'qwen3-4b'" in chosen.reason
    assert chosen.target.model == "qwen3-4b"


def test_from_vectors_truncates_without_the_service_and_says_so():
    chosen = plan(facts(service=None, service_error="down"), Request("docs", 256, "from-vectors"))
    assert chosen.method == "engine"
    assert chosen.notes and "truncating anyway (--from-vectors)" in chosen.notes[0]


def test_from_vectors_refused_when_the_model_differs():
    with pytest.raises(ReindexError, match="--from-vectors is not possible.*use --re-embed"):
        plan(facts(service=replace(QWEN, name="other")), Request("docs", 256, "from-vectors"))


def test_not_set_up_is_refused():
    with pytest.raises(ReindexError, match="was not set up by the bridge"):
        plan(facts(current=None), Request("docs", 256))


def test_an_index_that_is_not_behind_the_alias_is_refused():
    with pytest.raises(ReindexError, match="is not an alias of docs-d1024; run bridge setup"):
        plan(facts(alias_indices=set()), Request("docs", 256))


def test_the_same_dimension_is_refused():
    with pytest.raises(ReindexError, match="already serves 1024-dimensional vectors"):
        plan(facts(), Request("docs", 1024))


def test_a_stale_target_index_is_refused_with_what_to_delete():
    with pytest.raises(
        ReindexError, match=r"docs-d256 already exists.*bridge indexes docs --drop docs-d256"
    ):
        plan(facts(target_exists=True), Request("docs", 256))


def test_a_target_from_another_source_is_stale():
    other = replace(SOURCE, dim=256, reindex={**checkpoint(), "source": "docs-d2048"})
    with pytest.raises(ReindexError, match="already exists"):
        plan(facts(target=other, target_exists=True), Request("docs", 256))


def test_re_embedding_needs_the_service():
    with pytest.raises(ReindexError, match=r"service is needed \(to re-embed\): down"):
        plan(facts(service=None, service_error="down"), Request("docs", 256, "re-embed"))


def test_a_native_source_needs_the_service_even_to_truncate():
    native = replace(SOURCE, mode="native", pipeline="p")
    with pytest.raises(ReindexError, match=r"needed \(the new index embeds at ingest\)"):
        plan(facts(current=native, service=None, service_error="down"),
             Request("docs", 256, "from-vectors"))  # fmt: skip


def test_a_dimension_outside_the_service_range_is_refused():
    with pytest.raises(ReindexError, match=r"gives 32\.\.1024 dimensions, not 16"):
        plan(facts(), Request("docs", 16, prefer="re-embed"))


def test_an_interrupted_fill_resumes_with_its_method():
    target = replace(SOURCE, dim=256, reindex=checkpoint("scroll"))
    chosen = plan(facts(target=target, target_exists=True), Request("docs", 256))
    assert chosen.method == "scroll" and chosen.reason == "resuming the interrupted run"
    assert chosen.target is target
    assert chosen.resume == Checkpoint("docs-d1024", "scroll", Phase.FILL, 5, "d9", None, 3)
    assert "resume: phase fill, 3 copied so far" in chosen.lines()


def test_a_run_stopped_after_the_swap_resumes_from_the_old_index():
    swapped = replace(SOURCE, dim=256, reindex=checkpoint("engine", "swapped"))
    chosen = plan(facts(current=swapped, alias_indices={"docs-d256"}, resumed_source=SOURCE),
                  Request("docs", 256))  # fmt: skip
    assert chosen.source is SOURCE and chosen.target is swapped
    assert chosen.resume is not None and chosen.resume.phase is Phase.SWAPPED


def test_a_run_stopped_after_the_swap_whose_old_index_is_gone_is_refused():
    swapped = replace(SOURCE, dim=256, reindex=checkpoint("engine", "swapped"))
    with pytest.raises(ReindexError, match="docs-d1024 is gone; nothing to resume"):
        plan(facts(current=swapped, alias_indices={"docs-d256"}), Request("docs", 256))


def test_the_checkpoint_round_trips_and_reads_older_forms():
    stored = Checkpoint.from_stored({**checkpoint(phase="catch_up"), "extra": 1}).stored()
    assert stored["phase"] == "catch_up" and "extra" not in stored
    assert Checkpoint.from_stored(stored).phase is Phase.CATCH_UP
    with pytest.raises(ValueError):
        Checkpoint.from_stored({**checkpoint(), "phase": "bogus"})


MINILM = ModelInfo("minilm", 384, 384, 384, 256)
MINILM_SOURCE = IndexMeta(alias="docs", dim=384, model="minilm", created_at=1.0)


@pytest.mark.parametrize("prefer", ["auto", "from-vectors", "re-embed"])
def test_a_model_not_trained_for_truncation_names_the_fix(prefer):
    minilm = facts(current=MINILM_SOURCE, alias_indices={"docs-d384"},
                   counts={"docs-d384": 7}, service=MINILM)  # fmt: skip
    with pytest.raises(ReindexError) as refused:
        plan(minilm, Request("docs", 128, prefer))  # type: ignore[arg-type]
    message = str(refused.value)
    assert "minilm gives 384..384 dimensions, not 128" in message
    assert "bridge serve --allow-truncation" in message
    assert "--re-embed" not in message and "Matryoshka" not in message


def test_a_model_served_with_allow_truncation_is_truncated_without_claims():
    allowed = replace(MINILM, min_dimension=32)
    served = facts(current=MINILM_SOURCE, alias_indices={"docs-d384"},
                   counts={"docs-d384": 7}, service=allowed)  # fmt: skip
    chosen = plan(served, Request("docs", 128))
    assert chosen.method == "engine" and "Matryoshka" not in " ".join(chosen.lines())


def test_an_empty_target_left_by_setup_is_replaced():
    left = replace(SOURCE, dim=256, created_at=1.5)
    chosen = plan(facts(target=left, target_exists=True, counts={"docs-d1024": 7, "docs-d256": 0}),
                  Request("docs", 256))  # fmt: skip
    assert chosen.replace_empty and chosen.target is not left
    assert "note: docs-d256 exists and is empty: it is replaced" in chosen.lines()


def test_a_target_with_documents_is_refused_with_the_command_to_drop_it():
    left = replace(SOURCE, dim=256)
    with pytest.raises(ReindexError, match=r"bridge indexes docs --drop docs-d256"):
        plan(facts(target=left, target_exists=True, counts={"docs-d1024": 7, "docs-d256": 3}),
             Request("docs", 256))  # fmt: skip


def test_an_empty_index_not_made_by_the_bridge_is_never_replaced():
    with pytest.raises(ReindexError, match="docs-d256 already exists"):
        plan(facts(target_exists=True, counts={"docs-d1024": 7, "docs-d256": 0}),
             Request("docs", 256))  # fmt: skip


PASSAGES = {"max_tokens": 256, "overlap": 32}


def test_one_vector_to_passages_re_embeds_into_a_tagged_index():
    """Same dimension, new layout: NAME-dD-pNoM beside NAME-dD, always re-embedded."""
    chosen = plan(facts(), Request("docs", 1024, passages=PASSAGES))
    assert chosen.method == "re-embed" and "split into passages" in chosen.reason
    assert chosen.target.index == "docs-d1024-p256o32" and chosen.target.layout == "p256o32"
    assert chosen.target.passages == PASSAGES and chosen.target.knn_field == "embedding.embedding"
    assert any("one vector per document -> passages of 256 tokens" in x for x in chosen.lines())
    with pytest.raises(ReindexError, match="--from-vectors is not possible.*embedded again"):
        plan(facts(), Request("docs", 1024, prefer="from-vectors", passages=PASSAGES))


def test_a_tagged_index_keeps_its_tag_when_only_the_dimension_changes():
    source = replace(SOURCE, passages=PASSAGES, layout="p256o32")
    current = facts(current=source, alias_indices={"docs-d1024-p256o32"},
                    counts={"docs-d1024-p256o32": 7})  # fmt: skip
    chosen = plan(current, Request("docs", 256))
    assert chosen.method == "engine" and chosen.target.index == "docs-d256-p256o32"
    with pytest.raises(ReindexError, match="already serves 1024-dimensional vectors, passages"):
        plan(current, Request("docs", 1024, passages=PASSAGES))
    back = plan(current, Request("docs", 1024, passages=None))
    assert back.target.index == "docs-d1024-single" and back.target.passages is None


def test_same_layout_is_nothing_to_do():
    with pytest.raises(ReindexError, match="already serves 1024-dimensional vectors, one"):
        plan(facts(), Request("docs", 1024, passages=None))


def test_resume_after_the_swap_of_a_conversion():
    target = replace(SOURCE, passages=PASSAGES, layout="p256o32",
                     reindex=checkpoint("re-embed", "swapped"))  # fmt: skip
    after = facts(current=target, alias_indices={"docs-d1024-p256o32"}, resumed_source=SOURCE,
                  counts={"docs-d1024": 7, "docs-d1024-p256o32": 7})  # fmt: skip
    chosen = plan(after, Request("docs", 1024, passages=PASSAGES))
    assert chosen.resume is not None and chosen.resume.phase is Phase.SWAPPED
    assert chosen.source.index == "docs-d1024" and chosen.target.index == "docs-d1024-p256o32"
    with pytest.raises(ReindexError, match="stopped after the alias moved"):
        plan(after, Request("docs", 512))
