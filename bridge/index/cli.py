"""``bridge setup``, ``ingest``, ``search``, ``eval`` and ``reindex``.

``--json`` prints JSON to standard output (notes go to standard error); ``--output FILE``
writes a report to a file. Option defaults are read from the functions and classes that
use them, so each is written once.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import click

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.indexes import drop_index, physical_indexes
from bridge.index.ingest import Indexer, ingest_file
from bridge.index.meta import TITLE_BOOST, SetupError, describe_layout, read_meta
from bridge.index.reindex import SAME, Plan, Reindexer, ReindexError, plan_reindex
from bridge.index.search import Hit, HybridSearch, SearchOptions
from bridge.index.setup import setup_index
from bridge.model.errors import InputError
from bridge.model.passages import DEFAULT_PASSAGE_TOKENS, PassageSpec
from bridge.nodes import cluster

FALLBACK_ENGINE_URL = "http://127.0.0.1:9200"


def default_of(owner: Callable, name: str) -> Any:
    """The default of parameter ``name`` of a function or class (the one source of it)."""
    return inspect.signature(owner).parameters[name].default


def local_engine_url() -> str:
    """The URL of the one local engine ``bridge engine start`` runs; with none, the usual
    default; with several, a usage error that names them."""
    running = cluster.all_clusters()
    if len(running) > 1:
        urls = ", ".join(f"{s.url} ({s.engine})" for s in running)
        raise click.UsageError(f"several local engines run ({urls}): pick one with --engine-url")
    if running:
        click.echo(f"using the local {running[0].engine} at {running[0].url}", err=True)
        return running[0].url
    return FALLBACK_ENGINE_URL


def connection_options(func):
    """Options shared by the commands that talk to an engine and to the bridge."""
    options = [
        click.option("--engine-url", envvar="BRIDGE_ENGINE_URL", default=None,
                     help="Elasticsearch or OpenSearch URL [default: the local engine that "
                     f"bridge engine runs, else {FALLBACK_ENGINE_URL}]."),
        click.option("--engine-user", envvar="BRIDGE_ENGINE_USER", default=None,
                     help="Basic-auth user of the engine."),
        click.option("--engine-password", envvar="BRIDGE_ENGINE_PASSWORD", default=None,
                     help="Basic-auth password of the engine."),
        click.option("--engine-api-key", envvar="BRIDGE_ENGINE_API_KEY", default=None,
                     help="Engine API key (sent as 'ApiKey ...')."),
        click.option("--ca-file", envvar=["BRIDGE_CA_FILE", "BRIDGE_ENGINE_CA_FILE"], default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle to verify the engine's TLS certificate."),
        click.option("--insecure", is_flag=True,
                     envvar=["BRIDGE_INSECURE", "BRIDGE_ENGINE_INSECURE"],
                     help="Do not verify the engine's TLS certificate."),
        click.option("--bridge-url", "bridge_urls", envvar=["BRIDGE_BRIDGE_URL", "BRIDGE_URL"],
                     multiple=True,
                     default=["http://127.0.0.1:8000"], show_default=True,
                     help="Embedding service URL; repeat for fail-over."),
        click.option("--bridge-api-key", envvar=["BRIDGE_BRIDGE_API_KEY", "BRIDGE_API_KEY"],
                     default=None,
                     help="Bearer key of the embedding service."),
        click.option("--retry-for", envvar="BRIDGE_RETRY_FOR", type=float, default=60.0,
                     show_default=True, help="Seconds to keep retrying connection errors, "
                     "timeouts, 429 and 502-504 (of the engine and the service) before a "
                     "document counts as failed."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(**kw):
        retry_for = kw.pop("retry_for")
        engine = EngineClient(
            kw.pop("engine_url") or local_engine_url(),
            username=kw.pop("engine_user"),
            password=kw.pop("engine_password"),
            api_key=kw.pop("engine_api_key"),
            ca_file=kw.pop("ca_file"),
            verify=not kw.pop("insecure"),
            retry_for=retry_for,
        )
        urls = [u for raw in kw.pop("bridge_urls") for u in raw.split(",") if u]
        embedder = EmbeddingClient(urls, api_key=kw.pop("bridge_api_key"), retry_for=retry_for)
        try:
            return func(engine=engine, embedder=embedder, **kw)
        except (ClientError, SetupError) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            engine.close()
            embedder.close()

    return wrapper


def _check_input_file(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """FILE must exist; ``-`` (the default) must be piped, not a terminal waiting."""
    if value == "-":
        if sys.stdin.isatty():
            raise click.UsageError(
                "no FILE given and standard input is a terminal: pass a JSONL file, or pipe "
                "one in (cat docs.jsonl | bridge ingest - --index NAME)",
                ctx,
            )
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value}: no such file", ctx, param)
    return value


def _parse_weights(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(w) for w in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2 or min(parts) < 0 or sum(parts) <= 0:
        raise click.BadParameter(
            f"{value!r}: give two non-negative numbers bm25,knn (e.g. 0.3,0.7)", ctx, param
        )
    return parts  # type: ignore[return-value]


def _parse_filter(ctx: click.Context, param: click.Parameter, value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        why = f"not valid JSON ({exc.msg}, column {exc.colno})"
        raise click.BadParameter(why, ctx, param) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            "a query DSL object is needed, e.g. '{\"term\": {...}}'", ctx, param
        )
    return parsed


def _meta_or_fail(engine: EngineClient, index: str):
    meta = read_meta(engine, index)
    if meta is None:
        raise click.ClickException(
            f"{index} was not set up by the bridge (or does not exist): run bridge setup first"
        )
    return meta


def _parse_fields(_ctx, _param, value: str | None) -> list[str] | None:
    """``title^2,text`` -> ["title^2", "text"], each boost checked."""
    if value is None:
        return None
    fields = [f.strip() for f in value.split(",") if f.strip()]
    for field in fields:
        name, _, boost = field.partition("^")
        try:
            ok = bool(name) and (not boost or float(boost) > 0)
        except ValueError:
            ok = False
        if not ok:
            raise click.BadParameter(f"{field!r} is not FIELD or FIELD^BOOST (BOOST > 0)")
    if not fields:
        raise click.BadParameter("name at least one field")
    return fields


def hit_json(hit: Hit) -> dict:
    out: dict = {"id": hit.id, "score": hit.score, "source": hit.source}
    if hit.passage:
        out["passage"] = asdict(hit.passage)
    return out


@click.command()
@connection_options
@click.option("--index", required=True, help="Alias the applications use (NAME).")
@click.option("--dim", type=int, required=True, help="Vector dimension; index is NAME-dD.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "bridge", "native"]),
    default="auto",
    show_default=True,
    help="native: the engine embeds at ingest (OpenSearch ml-commons); bridge: "
    "bridge ingest embeds; auto: native where the engine can.",
)
@click.option(
    "--text-field", default=default_of(setup_index, "text_field"), show_default=True,
    help="The body: embedded (split into passages) and searched by BM25.",
)  # fmt: skip
@click.option(
    "--title-field", default=default_of(setup_index, "title_field"), show_default=True,
    help="Embedded in front of the body (each passage) and searched by BM25; '' for none.",
)  # fmt: skip
@click.option(
    "--text-fields",
    "bm25_fields",
    default=None,
    callback=_parse_fields,
    help=f"Fields BM25 searches, FIELD[^BOOST] comma-separated [default: "
    f"TITLE^{TITLE_BOOST:g},TEXT].",
)
@click.option(
    "--passage-tokens",
    type=click.IntRange(min=0),
    default=DEFAULT_PASSAGE_TOKENS,
    show_default=True,
    help="Split each body into passages of at most this many model tokens, one vector "
    "each (capped at the model's input limit); 0: one vector per document.",
)
@click.option(
    "--passage-overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Tokens shared by consecutive passages (after a paragraph break: whole paragraphs "
    "up to that many) [default: half of --passage-tokens].",
)
@click.option(
    "--vector-field", default=None,
    help="Field holding the vectors [default: passages, or embedding for one vector].",
)  # fmt: skip
@click.option(
    "--analyzer", default=default_of(setup_index, "analyzer"), show_default=True,
    help="BM25 analyzer.",
)  # fmt: skip
@click.option(
    "--index-type",
    type=click.Choice(["hnsw", "int8_hnsw", "bbq_hnsw"]),
    default=None,
    help="Elasticsearch dense_vector index type [default: int8_hnsw].",
)
@click.option("--shards", type=int, default=default_of(setup_index, "shards"), show_default=True)
@click.option(
    "--replicas",
    type=click.IntRange(min=0),
    default=None,
    help="Replica shards [default: 1 where the cluster has two data nodes or more, else 0].",
)
@click.option(
    "--engine-bridge-url",
    default=None,
    help="URL the engine uses to reach the bridge [default: the first --bridge-url].",
)
def setup(
    engine,
    embedder,
    index,
    dim,
    mode,
    text_field,
    title_field,
    bm25_fields,
    passage_tokens,
    passage_overlap,
    vector_field,
    analyzer,
    index_type,
    shards,
    replicas,
    engine_bridge_url,
) -> None:
    """Create NAME-dD behind alias NAME, checked against the service, with its ingest wiring.

    Each document's body is split into passages (one vector each, the title in front), so
    long documents are found by their best passage; BM25 searches title and body."""
    passages = None
    if passage_tokens:
        passages = PassageSpec.of(passage_tokens, passage_overlap)
        try:
            passages.check()
        except InputError as exc:
            raise click.BadParameter(str(exc), param_hint="--passage-overlap") from None
    meta, notes = setup_index(
        engine, embedder, index, dim, mode,
        bridge_url=engine_bridge_url or embedder.urls[0],
        api_key=embedder.api_key,
        text_field=text_field, vector_field=vector_field, analyzer=analyzer,
        index_type=index_type, shards=shards, replicas=replicas,
        title_field=title_field or None, passages=passages, bm25_fields=bm25_fields,
    )  # fmt: skip
    for note in notes:
        click.echo(f"- {note}", err=True)
    click.echo(f"{meta.alias} -> {meta.index}: {meta.mode} ingest, {meta.dim} dimensions")


@click.command()
@connection_options
@click.argument("file", default="-", callback=_check_input_file)
@click.option("--index", required=True, help="Alias set up with bridge setup.")
@click.option(
    "--batch-size", type=int, default=default_of(Indexer, "batch_size"), show_default=True
)
@click.option("--id-field", default=None, help="Document id field [default: _id, id, doc_id].")
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append documents that finally fail here, with the reason.",
)
@click.option(
    "--retry-dead-letter",
    is_flag=True,
    help="FILE is a dead-letter file from an earlier run: ingest its documents again.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Embed and write every document, also those the index already holds unchanged.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ingest(
    engine, embedder, file, index, batch_size, id_field, dead_letter, retry_dead_letter, force,
    as_json,
) -> None:  # fmt: skip
    """Ingest FILE (JSONL, BEIR corpus.jsonl too; - for stdin) into INDEX.

    Each document needs the index's text field; the id comes from _id/id/doc_id, else a
    content hash, so a rerun never duplicates, and documents the index already holds
    unchanged are skipped (--force embeds them again). Bad lines are reported by number
    while the rest is ingested. Ctrl-C finishes the batches in flight and prints what was
    done; the same command resumes.
    """
    if retry_dead_letter and dead_letter and Path(file).resolve() == dead_letter.resolve():
        raise click.ClickException("--dead-letter must differ from the file being replayed")
    meta = _meta_or_fail(engine, index)
    indexer = Indexer(
        engine, meta, embedder if meta.mode == "bridge" else None,
        batch_size=batch_size, id_field=id_field, dead_letter=dead_letter,
        retry_for=engine.retry_for, skip_unchanged=not force,
    )  # fmt: skip
    summary = ingest_file(indexer, file, dead_letter_input=retry_dead_letter)
    engine.request("POST", f"/{meta.alias}/_refresh")
    if not (summary.indexed or summary.skipped or summary.unchanged or summary.failed):
        if summary.interrupted:
            raise click.ClickException("interrupted before any document was written")
        shown = "standard input" if file == "-" else file
        raise click.ClickException(f"{shown} holds no documents (one JSON object a line)")
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        _print_ingest_summary(summary, dead_letter)
    if summary.interrupted:
        rerun = "the same command" + (" (without --retry-dead-letter)" if retry_dead_letter else "")
        click.echo(
            f"interrupted: run {rerun} again to resume (documents already indexed are "
            "skipped as unchanged)",
            err=True,
        )
        raise SystemExit(130)
    if summary.failed:
        raise SystemExit(1 if summary.indexed + summary.unchanged == 0 else 2)


def _print_ingest_summary(summary, dead_letter: Path | None) -> None:
    unchanged = f", {summary.unchanged} unchanged, skipped" if summary.unchanged else ""
    click.echo(
        f"indexed {summary.indexed}{unchanged}, skipped {summary.skipped} duplicate ids, "
        f"failed {len(summary.failed)} in {summary.seconds:.1f}s "
        f"({summary.docs_per_second:.1f} docs/s)"
    )
    for failure in summary.failed[:20]:
        where = f"line {failure.line}" if failure.line else f"id {failure.doc_id}"
        click.echo(f"  {where}: {failure.reason}", err=True)
    if len(summary.failed) > 20:
        click.echo(f"  ... and {len(summary.failed) - 20} more", err=True)
    if summary.failed and dead_letter:
        click.echo(
            f"  failed documents are in {dead_letter}: fix them there, then "
            f"bridge ingest {dead_letter} --retry-dead-letter",
            err=True,
        )


@click.command()
@connection_options
@click.argument("text")
@click.option("--index", required=True, help="Alias set up with bridge setup.")
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "bm25", "knn"]),
    default=None,
    help="[default: the index's search profile, else hybrid]",
)
@click.option(
    "--k", type=int, default=None, help=f"Results to return [default: {SearchOptions.k}]."
)
@click.option(
    "--fusion",
    type=click.Choice(["rrf", "linear"]),
    default=None,
    help=f"How hybrid combines the halves [default: profile, else {SearchOptions.fusion}].",
)
@click.option(
    "--weights",
    default=None,
    callback=_parse_weights,
    help="Linear weights bm25,knn (e.g. 0.3,0.7).",
)
@click.option(
    "--filter",
    "filter_json",
    default=None,
    callback=_parse_filter,
    help="Query DSL filter (JSON) for both halves.",
)
@click.option(
    "--text-fields",
    default=None,
    callback=_parse_fields,
    help="Fields BM25 searches, FIELD[^BOOST] comma-separated [default: the index's].",
)
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
def search(
    engine, embedder, text, index, mode, k, fusion, weights, filter_json, text_fields, as_json
) -> None:
    """Search INDEX for TEXT (embedded in query mode). On a passage index, kNN and hybrid
    hits show their best passage."""
    meta = _meta_or_fail(engine, index)
    options = SearchOptions.from_profile(
        meta.search_profile,
        mode=mode, k=k, fusion=fusion,
        weights=weights, filter=filter_json, text_fields=text_fields,
    )  # fmt: skip
    hits = HybridSearch(engine, embedder, meta).search(text, options)
    if as_json:
        click.echo(json.dumps([hit_json(h) for h in hits]))
        return
    if not hits:
        click.echo(f"no hits for {text!r} in {meta.alias} ({options.mode})", err=True)
    for rank, hit in enumerate(hits, start=1):
        shown = hit.passage.text if hit.passage else hit.source.get(meta.text_field, "")
        snippet = " ".join(str(shown).split())[:100]
        click.echo(f"{rank:2d}. {hit.score:.4f}  {hit.id}  {snippet}")


@click.command(name="eval")
@connection_options
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="BEIR corpus.jsonl (_id, title, text).",
)
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="BEIR queries.jsonl (_id, text).",
)
@click.option(
    "--qrels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="BEIR qrels .tsv (query-id, corpus-id, score).",
)
@click.option("--index", required=True, help="Alias to evaluate (set up and filled if empty).")
@click.option(
    "--dim",
    type=int,
    default=None,
    help="Dimension if the index must be created [default: the model's native].",
)
@click.option("--modes", default="bm25,knn,hybrid", show_default=True)
@click.option(
    "--tune",
    is_flag=True,
    help="Try RRF and linear fusions, report the best and save it as the index's "
    "search profile (used by bridge search by default).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the results as JSON to this file.",
)
def evaluate_command(
    engine, embedder, corpus, queries, qrels, index, dim, modes, tune, as_json, output
) -> None:
    """nDCG@10, recall@100 and MRR@10 per search mode on BEIR-format data."""
    from bridge.index import evaluate as ev
    from bridge.index.meta import write_meta

    meta = read_meta(engine, index)
    if meta is None:
        dim = dim or embedder.model_info().native_dimension
        meta, notes = setup_index(
            engine,
            embedder,
            index,
            dim,
            "auto",
            bridge_url=embedder.urls[0],
            api_key=embedder.api_key,
        )
        for note in notes:
            click.echo(f"- {note}", err=True)
    if engine.request("GET", f"/{meta.alias}/_count")["count"] == 0:
        click.echo(f"ingesting {corpus} into {meta.alias}", err=True)
        indexer = Indexer(engine, meta, embedder if meta.mode == "bridge" else None)
        summary = ingest_file(indexer, str(corpus))
        engine.request("POST", f"/{meta.alias}/_refresh")
        click.echo(f"indexed {summary.indexed}, failed {len(summary.failed)}", err=True)
    query_map, qrels_map, skipped = ev.judged_queries(
        ev.load_queries(queries), ev.load_qrels(qrels)
    )
    if skipped:
        click.echo(
            f"- {skipped} judged quer{'y has' if skipped == 1 else 'ies have'} no text in "
            f"{queries}: skipped (as BEIR's evaluation does)",
            err=True,
        )
    halves = ev.fetch_halves(HybridSearch(engine, embedder, meta), query_map)
    profile = SearchOptions.from_profile(meta.search_profile)
    current = {
        "mode": "hybrid",
        "fusion": profile.fusion,
        "rrf_k": profile.rrf_k,
        "weights": list(profile.weights),
        "normalization": profile.normalization,
    }
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    results = {
        m: ev.evaluate(run, qrels_map) for m, run in ev.mode_runs(halves, wanted, current).items()
    }
    payload: dict = {
        "index": meta.alias,
        "modes": ev.as_json(results),
        "skipped_queries": skipped,
    }
    if tune:
        best, best_scores, tried = ev.tune(halves, qrels_map)
        label = "tuned: " + (
            f"rrf k={best['rrf_k']}"
            if best["fusion"] == "rrf"
            else f"{best['normalization']} w={best['weights']}"
        )
        results[label] = best_scores
        meta.search_profile = best
        write_meta(engine, meta)
        payload["tuned"] = {
            "profile": best,
            "scores": ev.as_json({"best": best_scores})["best"],
            "tried": len(tried),
        }
    report = json.dumps(payload, indent=2)
    if output:
        output.write_text(report + "\n")
    click.echo(report if as_json else ev.scores_table(results))
    if tune:
        saved = f"saved search profile of {meta.alias}: {json.dumps(meta.search_profile)}"
        click.echo(saved, err=as_json)


@click.command()
@connection_options
@click.option("--index", required=True, help="Alias set up with bridge setup (NAME).")
@click.option(
    "--dim", type=int, default=None,
    help="New vector dimension; fills NAME-dD [default: the current one].",
)  # fmt: skip
@click.option(
    "--passage-tokens",
    type=click.IntRange(min=0),
    default=None,
    help="Convert to passages of at most this many model tokens (an index of one vector "
    "per document, or another window); 0: to one vector per document. The bodies are "
    "embedded again; the new index is NAME-dD-pNoM (or NAME-dD-single) [default: keep].",
)
@click.option(
    "--passage-overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Tokens shared by consecutive passages, with --passage-tokens "
    "[default: half of --passage-tokens].",
)
@click.option(
    "--from-vectors",
    "prefer",
    flag_value="from-vectors",
    help="Truncate the stored wider vectors (Matryoshka), even when the service cannot "
    "confirm the model.",
)
@click.option(
    "--re-embed", "prefer", flag_value="re-embed", help="Embed the text again through the service."
)
@click.option(
    "--batch",
    "batch_size",
    type=int,
    default=default_of(Reindexer, "batch_size"),
    show_default=True,
    help="Documents per page and bulk.",
)
@click.option("--delete-old", is_flag=True, help="Delete the old index once the alias moved.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option(
    "--engine-bridge-url",
    default=None,
    help="URL the engine uses to reach the bridge, for a native-mode index "
    "[default: the first --bridge-url].",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary (the plan with --dry-run) as JSON."
)
def reindex(
    engine, embedder, index, dim, passage_tokens, passage_overlap, prefer, batch_size,
    delete_old, dry_run, engine_bridge_url, as_json,
) -> None:  # fmt: skip
    """Move alias INDEX to DIM-dimensional vectors, or to passage vectors, with no downtime
    and no loss.

    Without --from-vectors/--re-embed the bridge truncates the stored vectors when they are
    wider and from the model the service serves (Qwen3-Embedding is Matryoshka-trained),
    else re-embeds; a new layout (--passage-tokens) always re-embeds. Searches through the
    alias work throughout; writes that arrive meanwhile are copied before the alias moves.
    Interrupted? Run the same command again: it resumes.
    """
    if dim is None and passage_tokens is None:
        raise click.UsageError("give --dim, --passage-tokens, or both")
    passages = _passage_layout(passage_tokens, passage_overlap)
    try:
        plan = plan_reindex(engine, embedder, index, dim, prefer or "auto", delete_old, passages)
        for line in plan.lines():
            click.echo(("" if dry_run else "- ") + line, err=as_json or not dry_run)
        if dry_run:
            if as_json:
                click.echo(json.dumps(_plan_json(plan), indent=2))
            return
        runner = Reindexer(
            engine, embedder, plan, batch_size=batch_size,
            bridge_url=engine_bridge_url or embedder.urls[0], api_key=embedder.api_key,
        )  # fmt: skip
        summary = runner.run()
    except KeyboardInterrupt:
        raise click.ClickException(
            "interrupted: the checkpoint is saved; run the same command again to resume"
        ) from None
    except ReindexError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({**asdict(summary), "method": plan.method}, indent=2))
        return
    cosine = summary.sample_min_cosine
    click.echo(
        f"{plan.alias} -> {plan.target.index}: {summary.copied} copied "
        f"({summary.docs_per_second:.0f} docs/s, {plan.method}), {summary.caught_up} caught up, "
        f"{summary.target_count} documents"
        + (f", sample cosine >= {cosine:.5f}" if cosine is not None else "")
    )


@click.command()
@connection_options
@click.argument("alias")
@click.option(
    "--drop", "drop", multiple=True, metavar="NAME",
    help="Delete this old index of ALIAS (repeatable); the live one is refused.",
)  # fmt: skip
@click.option("--drop-old", is_flag=True, help="Delete every index of ALIAS but the live one.")
@click.option("--json", "as_json", is_flag=True, help="Print the indexes as JSON.")
def indexes(engine, embedder, alias, drop, drop_old, as_json) -> None:
    """List ALIAS's physical indexes (NAME-dD or NAME-dD-LAYOUT: dimension, model,
    documents, one vector or passages, live or not),
    or drop the old ones that setup at another dimension and reindex leave behind."""
    if drop or drop_old:
        names = list(drop)
        if drop_old:
            names += [p.name for p in physical_indexes(engine, alias)
                      if not p.live and not p.filling and p.name not in names]  # fmt: skip
        if not names:
            click.echo(f"{alias} has no old index to drop", err=True)
        for name in names:
            click.echo(f"dropped {drop_index(engine, alias, name)}", err=True)
    found = physical_indexes(engine, alias)
    if as_json:
        rows = [
            {"index": p.name, "dim": p.dim, "model": p.meta.model if p.meta else None,
             "passages": p.meta.passages if p.meta else None,
             "documents": p.documents, "live": p.live, "reindexing": p.filling}
            for p in found
        ]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo(f"{alias} has no bridge index (bridge setup creates {alias}-dD)", err=True)
    for p in found:
        model = p.meta.model if p.meta else "(not made by the bridge)"
        state = "live" if p.live else ("reindexing into it" if p.filling else "old")
        layout = describe_layout(p.meta.passages) if p.meta else "?"
        click.echo(f"{p.name}  {p.dim:>5} dims  {p.documents:>9} docs  {model}  {layout}  {state}")


def _passage_layout(tokens: int | None, overlap: int | None) -> dict | None | Literal["same"]:
    """The layout ``bridge reindex`` asks for: passages, None (one vector) or ``SAME``."""
    if tokens is None:
        if overlap is not None:
            raise click.BadParameter("needs --passage-tokens", param_hint="--passage-overlap")
        return SAME
    if tokens == 0:
        return None
    spec = PassageSpec.of(tokens, overlap)
    try:
        spec.check()
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--passage-tokens") from None
    return asdict(spec)


def _plan_json(plan: Plan) -> dict:
    return {
        "alias": plan.alias,
        "source": plan.source.index,
        "target": plan.target.index,
        "method": plan.method,
        "reason": plan.reason,
        "passages": {"from": plan.source.passages, "to": plan.target.passages},
        "documents": plan.documents,
        "resume": plan.resume.stored() if plan.resume else None,
        "notes": plan.notes,
    }


def register(group: click.Group) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for command in (setup, ingest, search, reindex, indexes, evaluate_command):
        group.add_command(command)
