"""Which local engine a command talks to when no URL is given, and which cluster
``bridge engine stop/logs`` mean without --port (state files only; no JVM runs here)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.nodes.cluster import ClusterState, NodeState, cluster_dir


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("BRIDGE_ENGINE_URL", raising=False)
    return tmp_path


def fake_cluster(engine: str, port: int, pid: int) -> None:
    """A state file as `bridge engine start` writes it; ``pid`` alive means running."""
    node_dir = cluster_dir(engine, port) / "node-0"
    (node_dir / "logs").mkdir(parents=True)
    (node_dir / "logs" / f"bridge-{engine}-{port}.log").write_text(f"{engine} log line\n")
    node = NodeState("node-0", pid, port, port + 100, str(node_dir))
    ClusterState(engine, "1.0", f"http://127.0.0.1:{port}", "java", "1g", [node]).save()


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def search(*extra: str):
    args = ["search", "q", "--index", "docs", "--bridge-url", "http://127.0.0.1:9", *extra]
    return CliRunner().invoke(main, [*args, "--retry-for", "0"])


def test_the_one_running_engine_is_used(run_dir):
    fake_cluster("elasticsearch", 9210, os.getpid())
    result = search()
    assert "using the local elasticsearch at http://127.0.0.1:9210" in result.output
    assert "127.0.0.1:9210" in result.output.splitlines()[-1]  # what it then tried


def test_several_running_engines_are_named(run_dir):
    fake_cluster("elasticsearch", 9210, os.getpid())
    fake_cluster("opensearch", 9200, os.getpid())
    result = search()
    assert result.exit_code == 2
    assert "http://127.0.0.1:9200 (opensearch)" in result.output
    assert "http://127.0.0.1:9210 (elasticsearch)" in result.output
    assert "--engine-url" in result.output


def test_an_explicit_url_wins(run_dir):
    fake_cluster("elasticsearch", 9210, os.getpid())
    fake_cluster("opensearch", 9200, os.getpid())
    result = search("--engine-url", "http://127.0.0.1:9")
    assert "using the local" not in result.output and "several" not in result.output
    assert "127.0.0.1:9" in result.output


def test_logs_and_stop_find_the_cluster_without_port(run_dir):
    fake_cluster("elasticsearch", 9213, dead_pid())
    logs = CliRunner().invoke(main, ["engine", "logs", "elasticsearch"])
    assert logs.exit_code == 0 and "elasticsearch log line" in logs.output
    stop = CliRunner().invoke(main, ["engine", "stop", "elasticsearch"])
    assert stop.exit_code == 1
    assert "no local elasticsearch is running" in stop.output


def test_stop_of_a_port_with_nothing_running_fails(run_dir):
    result = CliRunner().invoke(main, ["engine", "stop", "opensearch", "--port", "9299"])
    assert result.exit_code == 1
    assert "opensearch on port 9299 was not running" in result.output


def test_logs_with_several_clusters_asks_for_a_port(run_dir):
    fake_cluster("opensearch", 9200, dead_pid())
    fake_cluster("opensearch", 9300, dead_pid())
    result = CliRunner().invoke(main, ["engine", "logs", "opensearch"])
    assert result.exit_code == 2 and "ports 9200, 9300" in result.output
