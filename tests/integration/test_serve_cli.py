"""`bridge serve` start-up mistakes: one clear line and an exit code, before heavy work."""

from __future__ import annotations

import socket
import subprocess
import sys


def _serve(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bridge.cli", "serve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_port_in_use_is_refused_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # A model that does not exist: had it been loaded first, the error would name it.
        done = _serve("--port", str(port), "--model", str(tmp_path / "no-such-model"))
    assert done.returncode == 2, done.stderr
    assert f"127.0.0.1:{port} is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_model_that_cannot_be_loaded_is_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    done = _serve("--port", "0", "--model", str(broken), "--device", "cpu")
    assert done.returncode == 1, done.stderr
    assert f"cannot load model {str(broken)!r}" in done.stderr
    assert "Traceback" not in done.stderr
