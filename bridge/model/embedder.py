"""Loading a model and running one forward pass over a batch of token sequences."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from bridge.model import fp8
from bridge.model.errors import DeviceError, ModelSpecError
from bridge.model.families import Family, family_for
from bridge.model.graphs import GraphCache
from bridge.model.packed import PackedQwen3, pack
from bridge.model.profile import ModelProfile

log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    """Resolve ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` to a usable torch device."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but CUDA is not available here")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return torch.device("cuda", index)
    if dev.type != "cpu":
        raise DeviceError(f"device type {dev.type!r} is not supported: use cpu or cuda")
    return dev


def pick_devices(device: str) -> list[str]:
    """One entry per model replica: ``cuda`` means every visible GPU (one worker each;
    narrow it with CUDA_VISIBLE_DEVICES), ``cuda:0,cuda:1`` a list, anything else one."""
    if device == "cuda" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if "," in device:
        return [d.strip() for d in device.split(",") if d.strip()]
    return [device]


def pad_batch(
    batch: list[list[int]], width: int, pad_id: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) on the CPU, each sequence on the padding side's far end."""
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        start = width - len(seq) if left else 0
        ids[row, start : start + len(seq)] = torch.tensor(seq)
        mask[row, start : start + len(seq)] = 1
    return ids, mask


def pick_dtype(device: torch.device, dtype: str) -> torch.dtype:
    """bf16 on CUDA and float32 on CPU unless told (fp16 can overflow on Qwen3)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise DeviceError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return table[dtype]


class InFlight:
    """Pooled vectors a GPU is still computing: copied to pinned host memory behind the
    forward pass, on the same stream; ``result`` waits for them."""

    def __init__(self, pooled: torch.Tensor) -> None:
        self._host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
        self._host.copy_(pooled, non_blocking=True)
        self._done = torch.cuda.Event()
        self._done.record()

    def result(self) -> np.ndarray:
        self._done.synchronize()
        return self._host.numpy()


@dataclass
class Embedder:
    """A loaded model: ``forward`` maps token sequences to pooled float32 vectors."""

    profile: ModelProfile
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    packed: PackedQwen3 | None = None  # the padding-free forward (Qwen3 on CUDA)
    graphs: GraphCache | None = None

    @classmethod
    def load(
        cls,
        profile: ModelProfile,
        device: str = "auto",
        dtype: str = "auto",
        compile: bool = False,
        fused_kernels: bool = True,
        quantize: str = "none",
    ) -> Embedder:
        dev = pick_device(device)
        torch_dtype = pick_dtype(dev, dtype)
        if quantize not in fp8.QUANTIZE_CHOICES:
            raise fp8.QuantizeError(f"unknown quantization {quantize!r}: use none or fp8")
        if quantize == "fp8":  # refused before minutes of loading on a device without FP8
            fp8.check_fp8_device(dev)
        # We tokenize on our own thread pool; the tokenizer's inner threads would only
        # compete with the model for cores (measured: -15% throughput on 2 cores).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            tokenizer = AutoTokenizer.from_pretrained(profile.path)
            model = AutoModel.from_pretrained(
                profile.path, dtype=torch_dtype, attn_implementation="sdpa"
            )
            model.to(dev).eval()
        except torch.OutOfMemoryError as exc:
            raise DeviceError(
                f"{profile.name} does not fit in the memory of {dev}: free the GPU, pick "
                "another --device, or a smaller model"
            ) from exc
        except (OSError, ValueError) as exc:  # missing or corrupt weights / tokenizer files
            raise ModelSpecError(f"cannot load {profile.path}: {exc}") from exc
        tokenizer.padding_side = profile.padding_side
        log.info("loaded %s (%s) on %s as %s", profile.name, profile.kind, dev, torch_dtype)
        packed = None
        if not compile:
            packed = family_for(profile.model_type).fast_forward(model, dev, fused_kernels)
        if quantize == "fp8":
            fp8.apply(model, packed, dev)
        if compile:
            # Fuses the elementwise work between the GEMMs (measured on an H200: +40% tokens/s
            # on 512-token batches, 31 -> 13 ms for a 16-token query); shapes stay dynamic.
            model = torch.compile(model, dynamic=True)
        return cls(profile, tokenizer, model, dev, torch_dtype, packed)

    def capture_graphs(self) -> None:
        """CUDA graphs for small packed batches (see graphs.py)."""
        if self.packed is None or self.graphs is not None:
            return
        cache = GraphCache(self.packed.forward, self.device, self.pad_id)
        cache.capture_all()
        self.graphs = cache

    def warm_up_shapes(self) -> None:
        """Forward passes over the shapes a compiled model specialises on (1 row, several
        rows, with and without padding), so that no client waits for a compilation."""
        for batch in ([[1] * 8], [[1] * 8, [1] * 8], [[1] * 5, [1] * 9, [1] * 17]):
            self.forward([[self.pad_id + 1] * len(s) for s in batch])

    @property
    def family(self) -> Family:
        return family_for(self.profile.model_type)

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding table: the valid token ids."""
        return int(self.model.get_input_embeddings().num_embeddings)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    def forward(self, batch: list[list[int]]) -> np.ndarray:
        """Pooled, not yet normalised, float32 vectors, one row per sequence, in order."""
        out = self.launch(batch)
        return out if isinstance(out, np.ndarray) else out.result()

    def launch(self, batch: list[list[int]]) -> np.ndarray | InFlight:
        """Start ``forward``: a large packed batch on a GPU returns while the GPU still
        works on it (``InFlight``), so that the caller can prepare the next batch
        meanwhile; anything else returns its vectors."""
        on_gpu = torch.cuda.device(self.device) if self.device.type == "cuda" else nullcontext()
        with on_gpu, torch.inference_mode():  # the worker thread's current GPU is this one
            return self._launch(batch)

    def _launch(self, batch: list[list[int]]) -> np.ndarray | InFlight:
        if self.graphs is not None:
            replayed = self.graphs.run(batch)
            if replayed is not None:
                return replayed
        if self.packed is not None:
            pooled = self.packed.forward(pack(batch, self.pad_id).to(self.device))
            return InFlight(pooled) if pooled.is_cuda else pooled.numpy()
        lengths = [len(s) for s in batch]
        width = max(lengths)
        ids, mask = pad_batch(batch, width, self.pad_id, self.profile.padding_side == "left")
        if self.device.type == "cuda":
            ids, mask = ids.pin_memory(), mask.pin_memory()
        ids = ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        if min(lengths) == width:
            # Without padding no mask is passed, so attention can take its fused causal kernel.
            return self._pooled_forward(ids, None, None).cpu().numpy()
        # Padding: the mask is needed (and Qwen3 positions start at each text's first token).
        positions = self.family.position_ids(mask)
        return self._pooled_forward(ids, mask, positions).cpu().numpy()

    def _pooled_forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None
    ) -> torch.Tensor:
        kwargs: dict = {}
        if mask is not None:
            kwargs["attention_mask"] = mask
        if positions is not None:
            kwargs["position_ids"] = positions
        hidden = self.model(input_ids=ids, **kwargs).last_hidden_state
        if mask is None:
            mask = torch.ones(ids.shape, dtype=torch.long, device=ids.device)
        return self._pool(hidden, mask, self.profile.padding_side == "left")

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor, left: bool) -> torch.Tensor:
        pooling = self.profile.pooling
        if pooling == "lasttoken":
            if left:
                return hidden[:, -1].float()
            last = mask.sum(-1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        if pooling == "cls":
            return hidden[:, 0].float()
        weights = mask.unsqueeze(-1).to(torch.float32)
        summed = (hidden.float() * weights).sum(1)
        return summed / weights.sum(1).clamp(min=1e-9)


def finish_vectors(pooled: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """MRL: keep the first ``dim`` values, then L2-normalise in float32 (if the model does)."""
    out = np.ascontiguousarray(pooled[..., :dim], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
    return out
