"""``bridge engine``: local OpenSearch / Elasticsearch nodes."""

import click


@click.group()
def engine() -> None:
    """Fetch and run a local OpenSearch or Elasticsearch node on loopback."""
