"""Installing (or removing) the ingest plugin in a local Elasticsearch home."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bridge.plugin.build import PLUGIN_NAME, PluginBuildError, build

_MARKER = ".bridge-plugin-zip"


def sync_plugin(home: Path, version: str, env: dict[str, str], wanted: bool) -> None:
    """Makes ``home`` hold the current build of the plugin when ``wanted``, else none.

    Runs ``bin/elasticsearch-plugin install --batch file:///…zip`` before the nodes start;
    a home holding an older build (other source hash) gets the new one."""
    installed = home / "plugins" / PLUGIN_NAME
    marker = home / _MARKER
    tool = str(home / "bin" / "elasticsearch-plugin")
    if not wanted:
        if installed.exists():
            _run([tool, "remove", PLUGIN_NAME], env, "removing")
        marker.unlink(missing_ok=True)
        return
    zip_path = build(version, progress=False)
    if installed.exists() and marker.exists() and marker.read_text() == zip_path.name:
        return
    if installed.exists():
        _run([tool, "remove", PLUGIN_NAME], env, "removing")
    _run([tool, "install", "--batch", zip_path.resolve().as_uri()], env, "installing")
    marker.write_text(zip_path.name)


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PluginBuildError(
            f"{what} the {PLUGIN_NAME} plugin failed (exit {done.returncode}); "
            f"start with --no-plugin to skip it:\n{(done.stdout + done.stderr)[-3000:]}"
        )
