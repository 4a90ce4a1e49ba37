"""How our Triton kernels are launched where they run: Triton's CPU interpreter (the tests),
the GPU's SMs and shared memory, and programmatic dependent launch; and the
device functions the kernels share (``wait_for_inputs``, ``silu_mul_rounded``,
``norm_rope_halves``).

**Programmatic dependent launch** (Hopper and newer): a kernel launched with it may be
started before the kernel ahead of it in the stream has finished, and waits
(``wait_for_inputs``, PTX ``griddepcontrol.wait``) until that kernel's writes are
visible before it touches any activation. A short query's forward is ~300 small
kernels in a CUDA graph, each otherwise paying the gap between one grid's end and the
next one's start: on an H100 this takes 0.17 ms off a 16-token query's 2.39 ms replay
and off 10 × 128 tokens' 11.9 ms, with bit-identical outputs (bench/results/
gpu_dependent_launch_h100.json). Letting the next kernel launch at a kernel's start
(``griddepcontrol.launch_dependents``) was slower (2.82 ms): its waiting programs hold
the SMs.
"""

from __future__ import annotations

import functools
import os

import torch

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None

try:
    from triton.language.extra.cuda import gdc_wait
except ImportError:  # Triton before 3.4, or none
    gdc_wait = None


def interpreting() -> bool:
    """Whether Triton kernels run in its CPU interpreter (the tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def hopper(device: torch.device) -> bool:
    """A CUDA device of compute capability 9.0 (Hopper) or newer."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


@functools.cache
def shared_memory(device: torch.device) -> int:
    """Bytes of shared memory one program on this CUDA device may ask for."""
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def hopper_fits(device: torch.device, shared_bytes: int) -> bool:
    """Whether tiles measured on an H100 suit this GPU: Hopper or newer, and programs may
    ask for their ``shared_bytes`` (a GPU with less, e.g. sm_120's 99 KiB, keeps smaller
    tiles); always in Triton's interpreter, so that the tests run those tiles."""
    if interpreting():
        return True
    return hopper(device) and shared_memory(device) >= shared_bytes


@functools.cache
def sm_count(device: torch.device) -> int:
    """The device's SMs, which grids are sized by (132, as an H100's, off CUDA: Triton's
    interpreter in the tests)."""
    if device.type != "cuda":
        return 132
    return torch.cuda.get_device_properties(device).multi_processor_count


def row_warps(block: int) -> int:
    """Warps for a program that takes one row of ``block`` elements (a norm, a
    quantization): 4 up to 2,048, 8 up to 8,192, else 16."""
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


@functools.cache
def _dependent_launch(device: torch.device) -> bool:
    # BRIDGE_DEPENDENT_LAUNCH=0: the way out, should a driver refuse it
    if os.environ.get("BRIDGE_DEPENDENT_LAUNCH", "1") == "0":
        return False
    return gdc_wait is not None and not interpreting() and hopper(device)


_INDEPENDENT = {"DEPENDENT": False}
_DEPENDENT = {"DEPENDENT": True, "launch_pdl": True}  # Triton's option only where it has one


def launch_options(device: torch.device) -> dict:
    """Keyword arguments for launching one of our kernels on ``device``: ``DEPENDENT``
    (the kernel's constexpr: wait for inputs) and, when on, Triton's ``launch_pdl``."""
    return _DEPENDENT if _dependent_launch(device) else _INDEPENDENT


wait_for_inputs = silu_mul_rounded = norm_rope_halves = None
if triton is not None:

    @triton.jit
    def wait_for_inputs(DEPENDENT: tl.constexpr):
        """A kernel's first step: under dependent launch, wait until the kernels before it
        have finished and their writes are visible."""
        if DEPENDENT:
            gdc_wait()

    @triton.jit
    def silu_mul_rounded(gate, up, dt: tl.constexpr):
        """``silu(gate) * up`` in float32, rounded to ``dt`` where the unfused steps round:
        gate and up (a GEMM's output), then SiLU; the caller rounds the product. The
        exponential and the division are the GPU's fast ones (ex2.approx, div.full): a few
        float32 units in the last place from torch's ``silu``, which rounding to 16 bits
        hides (no value of 318 M differed on an H100); the gate/up GEMM's epilogue takes
        5% less time than with libdevice's ``expf`` and an IEEE division."""
        g = gate.to(dt).to(tl.float32)
        return (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32) * up.to(dt).to(tl.float32)

    @triton.jit
    def norm_rope_halves(x1, x2, w1, w2, c1, c2, s1, s2, eps, dt: tl.constexpr, DIM: tl.constexpr):
        """Qwen3's q/k step on head rows given as their two halves (rotary pairs dimension
        i with i + DIM/2), all float32: RMSNorm over the head with the weight's halves
        ``w1``, ``w2``, then rotary with cos and sin halves; rounded to ``dt`` where
        ``kernels.norm_rope_torch`` rounds. Returns the two halves in ``dt``."""
        squares = tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)
        rstd = tl.rsqrt(tl.div_rn(squares, tl.full((), DIM, tl.float32)) + eps)[:, None]
        h1 = (w1 * (x1 * rstd).to(dt).to(tl.float32)).to(dt).to(tl.float32)
        h2 = (w2 * (x2 * rstd).to(dt).to(tl.float32)).to(dt).to(tl.float32)
        # rotate_half: (-second half, first half)
        out1 = (h1 * c1).to(dt).to(tl.float32) + (-h2 * s1).to(dt).to(tl.float32)
        out2 = (h2 * c2).to(dt).to(tl.float32) + (h1 * s2).to(dt).to(tl.float32)
        return out1.to(dt), out2.to(dt)
