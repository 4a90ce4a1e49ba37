"""The progress of a ``bridge reindex`` run, kept in the new index's ``_meta.bridge.reindex``.

A run goes fill -> catch_up -> swapped; what older versions wrote (a plain dict with the
same keys and string phases) reads back as the same checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    FILL = "fill"  # copying the old index into the new one
    CATCH_UP = "catch_up"  # copying what was written meanwhile, then checks and the swap
    SWAPPED = "swapped"  # the alias has moved: last catch-up pass and checks


@dataclass
class Checkpoint:
    source: str  # the old physical index
    method: str  # "engine", "scroll" or "re-embed"
    phase: Phase
    started_at: int  # epoch milliseconds
    cursor: str | None = None  # last doc_id copied by the paged fill
    task: str | None = None  # the engine's _reindex task
    copied: int = 0
    since: int | None = None  # catch-up copies what was written at or after this (ms)
    refresh_interval: str | None = None  # the old index's, restored on the new one

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> Checkpoint:
        """Read what any version stored (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["phase"] = Phase(values.get("phase", Phase.FILL))
        values.setdefault("copied", 0)
        return cls(**values)

    def stored(self) -> dict[str, Any]:
        """The JSON form kept in ``_meta.bridge.reindex``."""
        return {**asdict(self), "phase": self.phase.value}
