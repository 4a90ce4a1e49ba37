"""Downloading artifacts from Maven Central into a cache, with checksums and a progress bar.

Each file is checked against the strongest checksum Central publishes beside it
(``.sha512``, ``.sha256``, ``.sha1``). Some artifacts have none published; for those the
SHA-256 pinned in ``checksums.json`` (next to this module) is used; an artifact with
neither is accepted with a warning and its digest recorded beside it in the cache, or
refused when ``require_checksum`` is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

log = logging.getLogger(__name__)

CENTRAL = os.environ.get("BRIDGE_MAVEN_URL", "https://repo1.maven.org/maven2").rstrip("/")
PINNED = json.loads((Path(__file__).parent / "checksums.json").read_text())
_ALGORITHMS = ("sha512", "sha256", "sha1")


class DownloadError(RuntimeError):
    """A download or its checksum failed."""


@dataclass(frozen=True)
class Artifact:
    group: str
    name: str
    version: str
    ext: str = "zip"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.{self.ext}"

    @property
    def path(self) -> str:
        return f"{self.group.replace('.', '/')}/{self.name}/{self.version}/{self.filename}"

    def url(self, repository: str = CENTRAL) -> str:
        return f"{repository.rstrip('/')}/{self.path}"

    def __str__(self) -> str:
        return f"{self.group}:{self.name}:{self.version}@{self.ext}"


def _published_checksum(client: httpx.Client, url: str) -> tuple[str, str] | None:
    for algorithm in _ALGORITHMS:
        r = client.get(f"{url}.{algorithm}")
        if r.status_code == 200:
            digest = r.text.strip().split()[0].lower() if r.text.strip() else ""
            if digest:
                return algorithm, digest
    return None


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    artifact: Artifact,
    cache: Path,
    *,
    progress: bool = True,
    require_checksum: bool = False,
    retries: int = 3,
    repository: str = CENTRAL,
) -> Path:
    """Return the cached file for ``artifact``, downloading and verifying it once."""
    target = cache / artifact.path
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    url = artifact.url(repository)
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0), follow_redirects=True) as client:
        for attempt in range(1, retries + 1):
            try:
                _download(client, artifact, url, partial, progress)
                break
            except (httpx.HTTPError, OSError) as exc:
                if attempt == retries:
                    raise DownloadError(f"could not download {artifact} from {url}: {exc}") from exc
                log.warning("download of %s failed (%s); retrying", artifact, exc)
                time.sleep(2 * attempt)
        _verify(client, artifact, url, partial, require_checksum)
    partial.rename(target)
    return target


def _download(
    client: httpx.Client, artifact: Artifact, url: str, partial: Path, progress: bool
) -> None:
    with client.stream("GET", url) as r:
        if r.status_code == 404:
            raise DownloadError(
                f"{artifact} is not on Maven Central ({url} answered 404); check the version"
            )
        r.raise_for_status()
        total = int(r.headers.get("content-length") or 0) or None
        with (
            partial.open("wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=artifact.filename,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            for chunk in r.iter_bytes(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _verify(
    client: httpx.Client, artifact: Artifact, url: str, partial: Path, require: bool
) -> None:
    published = _published_checksum(client, url)
    if published is not None:
        algorithm, expected = published
        source = f"the {algorithm} published on Maven Central"
    elif artifact.path in PINNED:
        algorithm, expected = "sha256", PINNED[artifact.path]
        source = "the sha256 pinned in bridge/nodes/checksums.json"
    else:
        digest = _digest(partial, "sha256")
        if require:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                f"{artifact}: Maven Central publishes no checksum and none is pinned; "
                f"refusing it (its sha256 was {digest})"
            )
        log.warning("%s has no published or pinned checksum; sha256 %s", artifact, digest)
        partial.with_name(artifact.filename + ".sha256").write_text(digest + "\n")
        return
    actual = _digest(partial, algorithm)
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{artifact}: checksum mismatch against {source} "
            f"(expected {expected}, got {actual}); the download was deleted"
        )
    log.info("%s verified against %s", artifact, source)
