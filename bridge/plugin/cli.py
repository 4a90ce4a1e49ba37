"""`bridge plugin build`: the Elasticsearch ingest-plugin zip for one version."""

from __future__ import annotations

from pathlib import Path

import click

from bridge.nodes.distribution import ELASTICSEARCH_VERSION
from bridge.plugin.build import PluginBuildError, build


@click.group()
def plugin() -> None:
    """The Elasticsearch ingest plugin that calls the bridge."""


@plugin.command("build")
@click.option(
    "--version",
    "es_version",
    default=ELASTICSEARCH_VERSION,
    show_default=True,
    help="exact Elasticsearch version of the cluster (install refuses any other)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="copy the zip into this folder (default: print the cached zip's path)",
)
def build_command(es_version: str, out: Path | None) -> None:
    """Build the plugin zip; install it with `elasticsearch-plugin install file:///...zip`."""
    try:
        path = build(es_version, out)
    except PluginBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(path))
