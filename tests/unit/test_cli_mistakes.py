"""User mistakes on the command line: one clear line and a usage exit code, checked before
any connection or heavy work (no engine or service runs here)."""

from __future__ import annotations

import io

import click
import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.index.ingest import Failure, prepare_item, read_jsonl
from bridge.index.meta import IndexMeta

NOWHERE = ["--engine-url", "http://127.0.0.1:9", "--bridge-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "q", "--index", "docs", "--weights", "0.5"], "two non-negative numbers"),
        (["search", "q", "--index", "docs", "--weights", "a,b"], "two non-negative numbers"),
        (["search", "q", "--index", "docs", "--filter", "{bad"], "not valid JSON"),
        (["search", "q", "--index", "docs", "--filter", "[1]"], "query DSL object"),
        (["ingest", "missing.jsonl", "--index", "docs"], "missing.jsonl: no such file"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(args, says):
    result = CliRunner().invoke(main, [*args, *NOWHERE])
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def test_every_option_with_a_variable_names_it_in_help():
    def commands(group: click.Group):
        for command in group.commands.values():
            yield command
            if isinstance(command, click.Group):
                yield from commands(command)

    for command in commands(main):
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                assert param.show_envvar, (command.name, param.name)
                envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar
                option = max(param.opts, key=len).lstrip("-").upper().replace("-", "_")
                assert f"BRIDGE_{option}" in envvars, (command.name, param.name)  # as promised
    bridge_url = next(p for p in main.commands["search"].params if p.name == "bridge_urls")
    assert "BRIDGE_BRIDGE_URL" in bridge_url.envvar  # what `bridge --help` promises
    assert "BRIDGE_BRIDGE_URL" in CliRunner().invoke(main, ["search", "--help"]).output


def test_a_non_string_text_is_named_as_such():
    meta = IndexMeta("docs", 64, "m")
    failure = prepare_item(meta, 3, {"_id": "a", "text": 12345})
    assert isinstance(failure, Failure)
    assert failure.reason == "'text' must be a string, not int (12345)"
    assert "missing or empty" in prepare_item(meta, 4, {"_id": "b"}).reason  # type: ignore[union-attr]


def test_invalid_json_is_reported_once_with_its_column():
    (_, failure), = read_jsonl(io.BytesIO(b'{"text": "unterminated}\n'))  # fmt: skip
    assert isinstance(failure, Failure)
    assert failure.reason.startswith("invalid JSON (Unterminated string starting at")
    assert "at at" not in failure.reason and "column 10)" in failure.reason
