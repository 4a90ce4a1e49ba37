"""Encoder models: sentence-transformers directories and plain transformers encoders."""

from __future__ import annotations

from bridge.model.families.base import Family
from bridge.model.profile import ModelFiles, ModelProfile


class EncoderFamily(Family):
    """Pooling and normalisation as the directory's sentence-transformers modules declare;
    a plain transformers model gets mean pooling, normalised."""

    def profile(self, files: ModelFiles) -> ModelProfile:
        max_tokens = min(
            files.max_positions, int(files.st_config.get("max_seq_length") or files.max_positions)
        )
        if files.st_pooling is None:
            kind, pooling, normalize = "transformers", "mean", True
        else:
            kind, pooling, normalize = "sentence-transformers", files.st_pooling, files.st_normalize
        return ModelProfile(
            name=files.name,
            path=files.path,
            model_type=files.model_type,
            kind=kind,
            pooling=pooling,
            normalize=normalize,
            padding_side="left" if pooling == "lasttoken" else "right",
            native_dim=files.hidden_size,
            model_max_tokens=max_tokens,
        )
