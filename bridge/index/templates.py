"""JSON templates (``mappings/``, ``pipelines/``) rendered with the bridge's parameters.

A string that is exactly ``{{name}}`` (value or key) becomes the parameter itself, with its
type; ``{{name}}`` inside a longer string is replaced by its text.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

_WHOLE = re.compile(r"^\{\{(\w+)\}\}$")
_PART = re.compile(r"\{\{(\w+)\}\}")


class TemplateError(KeyError):
    pass


def _roots() -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    return [repo, Path(sys.prefix) / "share" / "embedding-bridge"]


@cache
def load(kind: str, name: str) -> Any:
    """The raw template ``kind/name.json`` (kind: ``mappings`` or ``pipelines``)."""
    for root in _roots():
        path = root / kind / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"template {kind}/{name}.json not found under {_roots()}")


def render(template: Any, params: dict[str, Any]) -> Any:
    def value(name: str) -> Any:
        if name not in params:
            raise TemplateError(f"template parameter {name!r} is missing")
        return params[name]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            whole = _WHOLE.match(node)
            if whole:
                return value(whole.group(1))
            return _PART.sub(lambda m: str(value(m.group(1))), node)
        return node

    return walk(template)


def rendered(kind: str, template: str, /, **params: Any) -> Any:
    return render(load(kind, template), params)
