"""Model families keyed by ``config.json``'s ``model_type``: a new family is one module
(a ``Family`` subclass) and one entry in ``FAMILIES``; anything else is an encoder."""

from __future__ import annotations

from bridge.model.families.base import Family
from bridge.model.families.encoder import EncoderFamily
from bridge.model.families.qwen3 import Qwen3Family
from bridge.model.profile import ModelProfile, read_model_files

FAMILIES: dict[str, Family] = {"qwen3": Qwen3Family()}
DEFAULT_FAMILY: Family = EncoderFamily()


def family_for(model_type: str) -> Family:
    return FAMILIES.get(model_type, DEFAULT_FAMILY)


def load_profile(model: str, revision: str | None = None) -> ModelProfile:
    """The profile of ``model`` (an alias, a local directory or a hub id)."""
    files = read_model_files(model, revision)
    return family_for(files.model_type).profile(files)
