"""API keys: Bearer tokens compared in constant time, rotatable from a file without restart."""

from __future__ import annotations

import hmac
import os
import threading
from pathlib import Path


def parse_keys(text: str) -> list[str]:
    """Keys separated by commas or new lines; blanks and ``#`` comments ignored."""
    keys = []
    for line in text.replace(",", "\n").splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(key)
    return keys


class KeyStore:
    """The accepted keys: fixed ones, plus those in ``key_file`` (re-read when it changes)."""

    def __init__(self, keys: list[str] | None = None, key_file: str | None = None) -> None:
        self._fixed = [k for k in (keys or []) if k]
        self._file = Path(key_file) if key_file else None
        self._file_keys: list[str] = []
        self._mtime: float | None = None
        self._lock = threading.Lock()
        if self._file is not None:
            self._reload()

    @property
    def enabled(self) -> bool:
        return bool(self._fixed) or self._file is not None

    def _reload(self) -> None:
        assert self._file is not None
        try:
            mtime = os.stat(self._file).st_mtime
        except FileNotFoundError:
            self._file_keys, self._mtime = [], None
            return
        if mtime != self._mtime:
            self._file_keys = parse_keys(self._file.read_text())
            self._mtime = mtime

    def check(self, authorization: str | None) -> bool:
        """True when the ``Authorization`` header carries an accepted Bearer key."""
        if not self.enabled:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if self._file is not None:
            with self._lock:
                self._reload()
        offered = token.strip().encode()
        ok = False
        for key in [*self._fixed, *self._file_keys]:
            ok |= hmac.compare_digest(offered, key.encode())
        return ok
