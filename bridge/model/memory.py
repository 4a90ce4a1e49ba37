"""Keeping a CPU server's resident memory low: trim the heap when the batcher goes idle.

glibc keeps freed activation buffers in its arenas; ``malloc_trim`` hands them back.
A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _libc.malloc_trim  # noqa: B018 - glibc has it; musl and macOS do not
except (OSError, AttributeError):
    _libc = None


def release_free_memory() -> None:
    """Give freed heap pages back to the system."""
    if _libc is not None:
        _libc.malloc_trim(0)
