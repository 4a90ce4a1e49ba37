"""Building the Elasticsearch ingest-plugin zip for one exact Elasticsearch version.

No Gradle: the compile classpath is the ``lib/`` of that version's distribution from Maven
Central (the same checksummed download ``bridge engine start`` uses), the compiler is a
``javac`` of a fitting version when the machine has one, else the Eclipse compiler (ecj,
from Maven Central) run on any Java 17+ runtime. The zip is cached in ``$BRIDGE_HOME``
keyed by Elasticsearch version and a hash of the Java sources.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bridge.nodes.cluster import bridge_home
from bridge.nodes.distribution import ELASTICSEARCH_VERSION, UnknownEngine, elasticsearch
from bridge.nodes.jdk import JavaNotFound, find_java
from bridge.nodes.maven import Artifact, DownloadError, fetch

SOURCES = Path(__file__).resolve().parents[2] / "plugins" / "elasticsearch"
PLUGIN_NAME = "bridge-embeddings"
PLUGIN_CLASS = "org.bridge.elasticsearch.BridgePlugin"
ECJ = Artifact("org.eclipse.jdt", "ecj", "3.38.0", ext="jar")


class PluginBuildError(RuntimeError):
    """The plugin could not be built; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """One Elasticsearch version and what its plugin build needs."""

    version: str
    major: int
    java_release: int

    @property
    def variant(self) -> str:
        return f"es{self.major}"


def target(version: str = ELASTICSEARCH_VERSION) -> Target:
    """Checks ``version`` and returns its build settings; raises ``PluginBuildError``."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise PluginBuildError(
            f"{version!r} is not an Elasticsearch version: give the cluster's exact version, "
            "e.g. --version 9.5.4 (GET / shows it as version.number)"
        )
    try:
        elasticsearch(version)
    except UnknownEngine as exc:
        raise PluginBuildError(str(exc)) from exc
    major = int(parts[0])
    if major not in (8, 9):
        raise PluginBuildError(f"Elasticsearch {version}: only 8.x and 9.x are supported")
    return Target(version, major, 21 if major >= 9 else 17)


def source_hash() -> str:
    """A short hash of every file under plugins/elasticsearch/ (the cache key's second half)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCES.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(SOURCES)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build(
    version: str = ELASTICSEARCH_VERSION, out: Path | None = None, progress: bool = True
) -> Path:
    """Returns the plugin zip for ``version`` (cached), copied into ``out`` when given."""
    spec = target(version)
    if not SOURCES.is_dir():
        raise PluginBuildError(f"the plugin sources are missing: {SOURCES} (use a source checkout)")
    cached = bridge_home() / "plugins" / f"{PLUGIN_NAME}-{version}-{source_hash()}.zip"
    if not cached.exists():
        _build_into(spec, cached, progress)
    if out is None:
        return cached
    out.mkdir(parents=True, exist_ok=True)
    copy = out / f"{PLUGIN_NAME}-{version}.zip"
    shutil.copyfile(cached, copy)
    return copy


def _build_into(spec: Target, zip_path: Path, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bridge-plugin-") as tmp:
        work = Path(tmp)
        classpath = _classpath(spec, work / "lib", progress)
        classes = work / "classes"
        classes.mkdir()
        sources = sorted((SOURCES / "src" / "common").rglob("*.java")) + sorted(
            (SOURCES / "src" / spec.variant).rglob("*.java")
        )
        _compile(spec, classpath, sources, classes, progress)
        jar = work / f"{PLUGIN_NAME}-{spec.version}.jar"
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for path in sorted(classes.rglob("*.class")):
                archive.write(path, str(path.relative_to(classes)))
        descriptor = (
            (SOURCES / "plugin-descriptor.properties.in")
            .read_text()
            .replace("@PLUGIN_VERSION@", spec.version)
            .replace("@CLASSNAME@", PLUGIN_CLASS)
            .replace("@JAVA_RELEASE@", str(spec.java_release))
            .replace("@ES_VERSION@", spec.version)
        )
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        partial = zip_path.with_suffix(".part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(jar, jar.name)
            archive.writestr("plugin-descriptor.properties", descriptor)
            archive.write(SOURCES / "entitlement-policy.yaml", "entitlement-policy.yaml")
        partial.rename(zip_path)


def _classpath(spec: Target, dest: Path, progress: bool) -> list[Path]:
    dist = elasticsearch(spec.version)
    try:
        archive = fetch(dist.core, bridge_home() / "downloads", progress=progress)
    except DownloadError as exc:
        raise PluginBuildError(
            f"Elasticsearch {spec.version} could not be fetched from Maven Central ({exc}); "
            "check the version number against your cluster's GET /"
        ) from exc
    jars: list[Path] = []
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[1] == "lib" and name.endswith(".jar"):
                target_path = dest / parts[2]
                target_path.parent.mkdir(parents=True, exist_ok=True)
                target_path.write_bytes(zf.read(name))
                jars.append(target_path)
    if not jars:
        raise PluginBuildError(f"{archive} holds no lib/*.jar; delete it and retry")
    return jars


def _compile(
    spec: Target, classpath: list[Path], sources: list[Path], classes: Path, progress: bool
) -> None:
    common = ["--release", str(spec.java_release), "-nowarn", "-encoding", "UTF-8"]
    common += ["-cp", ":".join(map(str, classpath)), "-d", str(classes)]
    common += [str(s) for s in sources]
    command = _compiler(spec, progress) + common
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PluginBuildError(
            f"compiling the plugin for Elasticsearch {spec.version} failed:\n"
            f"{(done.stdout + done.stderr)[-4000:]}"
        )


def _compiler(spec: Target, progress: bool) -> list[str]:
    """javac when a fitting JDK has one, else ecj on any Java 17+ runtime."""
    try:
        jdk = find_java(spec.java_release)
        javac = jdk.home / "bin" / "javac"
        if javac.exists():
            return [str(javac)]
    except JavaNotFound:
        pass
    try:
        runtime = find_java(17)
    except JavaNotFound as exc:
        raise PluginBuildError(
            f"building for Elasticsearch {spec.version} needs a Java {spec.java_release}+ JDK "
            f"or any Java 17+ runtime (for the Eclipse compiler): {exc}"
        ) from exc
    ecj = fetch(ECJ, bridge_home() / "downloads", progress=progress)
    return [str(runtime.home / "bin" / "java"), "-jar", str(ecj)]
