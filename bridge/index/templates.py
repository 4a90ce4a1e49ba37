"""JSON templates (``bridge/templates/mappings``, ``.../pipelines``) rendered with parameters.

They are package data, read through ``importlib.resources``: the same in a checkout, an
editable install and an installed wheel.

A string that is exactly ``{{name}}`` (value or key) becomes the parameter itself, with its
type; ``{{name}}`` inside a longer string is replaced by its text.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

_WHOLE = re.compile(r"^\{\{(\w+)\}\}$")
_PART = re.compile(r"\{\{(\w+)\}\}")


class TemplateError(KeyError):
    pass


@cache
def load(kind: str, name: str) -> Any:
    """The raw template ``kind/name.json`` (kind: ``mappings`` or ``pipelines``)."""
    resource = files("bridge") / "templates" / kind / f"{name}.json"
    if not resource.is_file():
        raise FileNotFoundError(f"template {kind}/{name}.json is not in the bridge package")
    return json.loads(resource.read_text(encoding="utf-8"))


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
