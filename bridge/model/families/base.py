"""What a model family decides: its profile rules and which forward runs it."""

from __future__ import annotations

import torch

from bridge.model.packed import PackedQwen3
from bridge.model.profile import ModelFiles, ModelProfile


class Family:
    """One model architecture's rules; the defaults suit any transformers encoder."""

    name = "transformers"

    def profile(self, files: ModelFiles) -> ModelProfile:
        """Pooling, padding side, end token, query template and MRL range of a model."""
        raise NotImplementedError

    def position_ids(self, mask: torch.Tensor) -> torch.Tensor | None:
        """Position ids for a padded batch, or None for the model's own default."""
        return None

    def fast_forward(
        self, model: torch.nn.Module, device: torch.device, fused_kernels: bool
    ) -> PackedQwen3 | None:
        """A faster forward than the padded transformers module on this device, if the
        family has one (None: padded batches through the module)."""
        return None
