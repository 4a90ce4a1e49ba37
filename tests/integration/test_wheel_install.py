"""The built wheel carries its templates: ``bridge setup`` from a fresh venv, against a node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bridge.clients.engine import EngineClient

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]


def build_wheel(workdir: Path) -> Path:
    """Build from a copy of what the wheel is made of, so the checkout stays clean."""
    src = workdir / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "bridge", src / "bridge", ignore=shutil.ignore_patterns("__pycache__"))
    out = workdir / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True, timeout=120,
    )  # fmt: skip
    [wheel] = out.glob("embedding_bridge-*.whl")
    return wheel


def fresh_venv(workdir: Path, wheel: Path) -> Path:
    """A new venv with the wheel; the shared venv's dependencies are reached through a
    ``.pth`` path (not its site dir, so its editable install of the checkout stays off)."""
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    return venv


def test_bridge_setup_from_an_installed_wheel(tmp_path, opensearch_url, qwen3_server):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for template in (
        "bridge/templates/mappings/opensearch.json",
        "bridge/templates/mappings/elasticsearch.json",
        "bridge/templates/pipelines/opensearch-connector.json",
        "bridge/templates/pipelines/opensearch-ingest.json",
    ):
        assert template in names
    venv = fresh_venv(tmp_path, wheel)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import bridge; print(bridge.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the wheel, not the checkout

    env |= {"BRIDGE_ENGINE_URL": opensearch_url, "BRIDGE_URL": qwen3_server.url}
    done = subprocess.run(
        [venv / "bin" / "bridge", "setup", "--index", "from-wheel", "--dim", "64",
         "--mode", "bridge", "--replicas", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mapping = EngineClient(opensearch_url).request("GET", "/from-wheel-d64/_mapping")
    props = mapping["from-wheel-d64"]["mappings"]["properties"]
    vector = props["passages"]["properties"]["embedding"]  # passage vectors by default
    assert props["passages"]["type"] == "nested"
    assert vector["type"] == "knn_vector" and vector["dimension"] == 64
