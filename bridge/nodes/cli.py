"""``bridge engine``: local OpenSearch / Elasticsearch nodes fetched from Maven Central."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from bridge.nodes import cluster
from bridge.nodes.distribution import UnknownEngine
from bridge.nodes.jdk import JavaNotFound
from bridge.nodes.maven import DownloadError
from bridge.plugin.build import PluginBuildError

ENGINES = click.Choice(["opensearch", "elasticsearch"])
_FAILURES = (
    cluster.EngineError,
    DownloadError,
    JavaNotFound,
    UnknownEngine,
    PluginBuildError,
    OSError,
)


@click.group()
def engine() -> None:
    """Fetch and run local OpenSearch or Elasticsearch nodes on loopback.

    Downloads go to $BRIDGE_HOME/downloads (default ~/.cache/bridge); installs and node
    data to $BRIDGE_RUN_DIR (default /var/lib/bridge as root, else $BRIDGE_HOME/run).
    Security is off and nodes bind 127.0.0.1 only: for development and tests.
    """


@engine.command()
@click.argument("name", type=ENGINES)
@click.option(
    "--version",
    "version",
    default=None,
    help="Engine version [default: OpenSearch 3.6.0, Elasticsearch 9.5.4].",
)
@click.option(
    "--port",
    type=int,
    default=None,
    help="HTTP port of the first node [default: 9200 OpenSearch, 9210 Elasticsearch].",
)
@click.option("--heap", default="1g", show_default=True, help="JVM heap of each node.")
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Nodes in the cluster (ports PORT, PORT+1, ...).",
)
@click.option("--fresh", is_flag=True, help="Wipe the cluster's data before starting.")
@click.option(
    "--timeout", type=float, default=240, show_default=True, help="Seconds to wait for green."
)
@click.option(
    "--require-checksum",
    is_flag=True,
    help="Refuse downloads with neither a published nor a pinned checksum.",
)
@click.option(
    "--no-plugin",
    is_flag=True,
    help="Elasticsearch: do not install the bridge ingest plugin (bridge plugin build).",
)
def start(name, version, port, heap, nodes, fresh, timeout, require_checksum, no_plugin) -> None:
    """Download (once), configure and start NAME; prints its URL when green."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        state = cluster.start(
            name,
            version,
            port,
            heap,
            nodes,
            fresh,
            timeout,
            require_checksum=require_checksum,
            plugin=not no_plugin,
        )
    except _FAILURES as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{name} {state.version} is green with {len(state.nodes)} node(s) ({state.java})", err=True
    )
    click.echo(state.url)


def _pick_port(name: str, port: int | None, stopped_too: bool) -> int:
    """``--port``, else the one local cluster of NAME that runs (with ``stopped_too``, else
    the one that has a directory); a usage error names the ports when there are several."""
    if port is not None:
        return port
    ports = cluster.ports_of(name)
    if not ports and stopped_too:
        ports = cluster.ports_of(name, running=False)
    if len(ports) > 1:
        choices = ", ".join(str(p) for p in ports)
        raise click.UsageError(f"{name} has clusters on ports {choices}: pick one with --port")
    if not ports:
        raise click.ClickException(f"no local {name} is running (see bridge engine status)")
    return ports[0]


@engine.command()
@click.argument("name", type=ENGINES)
@click.option(
    "--port",
    type=int,
    default=None,
    help="HTTP port of the cluster's first node [default: the one running].",
)
@click.option("--wipe", is_flag=True, help="Also delete the cluster's data.")
def stop(name, port, wipe) -> None:
    """Stop NAME's nodes (data is kept unless --wipe); exits 1 when none was running."""
    port = _pick_port(name, port, stopped_too=wipe)
    was_running = cluster.stop(name, port, wipe)
    if was_running:
        click.echo(f"{name} on port {port}: stopped" + (", data wiped" if wipe else ""))
    elif wipe:
        click.echo(f"{name} on port {port}: was not running, data wiped")
    else:
        raise click.ClickException(f"{name} on port {port} was not running")


@engine.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json) -> None:
    """List the local clusters that are running."""
    states = cluster.all_clusters()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"engine": s.engine, "version": s.version, "url": s.url, "nodes": len(s.nodes)}
                    for s in states
                ]
            )
        )
        return
    if not states:
        click.echo("no local engine is running")
    for s in states:
        pids = ", ".join(str(n.pid) for n in s.nodes)
        click.echo(f"{s.engine} {s.version}  {s.url}  {len(s.nodes)} node(s)  pids {pids}")


@engine.command()
@click.argument("name", type=ENGINES)
@click.option(
    "--port",
    type=int,
    default=None,
    help="HTTP port of the cluster's first node [default: the one running, else the one that ran].",
)
@click.option("--node", type=int, default=0, show_default=True, help="Which node.")
@click.option("-n", "--lines", type=int, default=50, show_default=True)
def logs(name, port, node, lines) -> None:
    """Print the end of a node's log."""
    port = _pick_port(name, port, stopped_too=True)
    node_dir = cluster.cluster_dir(name, port) / f"node-{node}"
    if not node_dir.exists():
        raise click.ClickException(f"no {name} cluster on port {port} (looked in {node_dir})")
    click.echo(cluster.log_tail(Path(node_dir), lines))
