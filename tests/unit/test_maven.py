"""Maven downloads against a real local HTTP repository: checksums, pins, 404s."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from bridge.nodes import maven
from bridge.nodes.maven import Artifact, DownloadError, fetch


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(root), **kw
    )
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def publish(root: Path, artifact: Artifact, data: bytes, checksums: dict[str, str]) -> None:
    path = root / artifact.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    for algorithm, digest in checksums.items():
        Path(f"{path}.{algorithm}").write_text(digest)


ART = Artifact("org.example", "thing", "1.0")
DATA = b"engine bytes" * 1000


def test_verified_against_published_sha1(repo, tmp_path):
    root, url = repo
    publish(root, ART, DATA, {"sha1": hashlib.sha1(DATA).hexdigest() + "  thing-1.0.zip"})
    got = fetch(ART, tmp_path / "cache", progress=False, repository=url)
    assert got.read_bytes() == DATA
    # Cached: a second fetch does not need the repository.
    assert fetch(ART, tmp_path / "cache", progress=False, repository="http://127.0.0.1:9") == got


def test_strongest_checksum_wins_and_mismatch_is_refused(repo, tmp_path):
    root, url = repo
    publish(
        root,
        ART,
        DATA,
        {"sha1": hashlib.sha1(DATA).hexdigest(), "sha512": hashlib.sha512(b"other").hexdigest()},
    )
    with pytest.raises(DownloadError, match="checksum mismatch against the sha512"):
        fetch(ART, tmp_path / "cache", progress=False, repository=url)
    assert not list((tmp_path / "cache").rglob("*.zip*")), "a bad download must not stay"


def test_pinned_checksum_used_when_none_published(repo, tmp_path, monkeypatch):
    root, url = repo
    publish(root, ART, DATA, {})
    monkeypatch.setitem(maven.PINNED, ART.path, hashlib.sha256(b"not it").hexdigest())
    with pytest.raises(DownloadError, match="pinned"):
        fetch(ART, tmp_path / "cache", progress=False, repository=url)
    monkeypatch.setitem(maven.PINNED, ART.path, hashlib.sha256(DATA).hexdigest())
    assert fetch(ART, tmp_path / "cache", progress=False, repository=url).exists()


def test_unverifiable_refused_when_required(repo, tmp_path):
    root, url = repo
    publish(root, ART, DATA, {})
    with pytest.raises(DownloadError, match="publishes no checksum"):
        fetch(ART, tmp_path / "c1", progress=False, repository=url, require_checksum=True)
    path = fetch(ART, tmp_path / "c2", progress=False, repository=url)
    recorded = path.with_name("thing-1.0.zip.sha256").read_text().strip()
    assert recorded == hashlib.sha256(DATA).hexdigest()


def test_missing_version_is_a_clear_404(repo, tmp_path):
    _, url = repo
    with pytest.raises(DownloadError, match="answered 404"):
        fetch(Artifact("org.example", "thing", "9.9"), tmp_path, progress=False, repository=url)
