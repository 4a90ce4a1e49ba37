"""Qwen3-Embedding: last-token pooling, the end token, the query instruction, MRL, and the
padding-free forward on GPUs (``packed.py``)."""

from __future__ import annotations

import logging

import torch

from bridge.model.errors import Unsupported
from bridge.model.families.base import Family
from bridge.model.kernels import pick_ops
from bridge.model.packed import PackedQwen3
from bridge.model.profile import ModelFiles, ModelProfile

log = logging.getLogger(__name__)

END_TOKEN_ID = 151643  # <|endoftext|>: ends every Qwen3-Embedding input; also the pad id
DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_TEMPLATE = "Instruct: {task}\nQuery:{text}"


class Qwen3Family(Family):
    name = "qwen3"

    def profile(self, files: ModelFiles) -> ModelProfile:
        return ModelProfile(
            name=files.name,
            path=files.path,
            model_type=files.model_type,
            kind="qwen3",
            pooling="lasttoken",
            normalize=True,
            padding_side="left",
            native_dim=files.hidden_size,
            model_max_tokens=files.max_positions,
            end_token_id=END_TOKEN_ID,
            query_template=QUERY_TEMPLATE,
            default_task=DEFAULT_TASK,
            trained_for_truncation=True,
        )

    def position_ids(self, mask: torch.Tensor) -> torch.Tensor:
        """Positions start at each text's first real token (left padding)."""
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def fast_forward(
        self, model: torch.nn.Module, device: torch.device, fused_kernels: bool
    ) -> PackedQwen3 | None:
        if device.type != "cuda":
            return None
        try:
            positions = min(int(model.config.max_position_embeddings), 65536)
            packed = PackedQwen3(model, pick_ops(device, fused_kernels), positions)
        except Unsupported as exc:
            log.warning("padding-free forward not used (%s): padded batches instead", exc)
            return None
        log.info("padding-free forward with %s kernels", packed.ops.name)
        return packed
