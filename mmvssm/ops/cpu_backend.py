"""``cpu`` backend of :func:`mmvssm.ops.selective_scan`: the fused C++ kernel.

The kernel (``mmvssm/ops/csrc``, built as the extension ``mmvssm.ops._selective_scan_cpu`` by ``setup.py``)
runs the whole scan -- softplus/delta_bias, the recurrence, the C contraction, the D skip and the silu(z)
gate -- in one pass per (batch, channel) row, with the N states in SIMD registers and a vectorised exp
(ATen's ``at::vec::Vectorized``, compiled for AVX-512, AVX2 and a portable fallback; the best variant the
CPU has is picked at run time, ``MMVSSM_CPU_ISA=avx2`` forces one), float32 accumulation for any input
dtype and a checkpointed backward pass (it stores only the state entering every 64-step chunk and
recomputes the rest). ``extension().isa()`` names the variant in use.

This module only prepares the layout (compute dtype, contiguous, B/C time-major) with ordinary autograd
ops, so that their gradients (dtype casts, transposes, group broadcast) come for free, and wraps the
kernel's forward/backward in a :class:`torch.autograd.Function`.
"""
from typing import Optional

import torch
from torch import Tensor

from .scan_backend import ScanBackend
from .scan_utils import as_groups, compute_dtype

_EXT = None
_IMPORT_ERROR: Optional[BaseException] = None

BUILD_HINT = ('build it with `make kernel` (= `python setup.py build_ext --inplace`) or '
              '`pip install -e . --no-build-isolation` from the repository root (needs a C++20 compiler '
              'with OpenMP; MMVSSM_WITH_CPU_KERNEL=0 skips it)')


def _load():
    global _EXT, _IMPORT_ERROR
    if _EXT is None and _IMPORT_ERROR is None:
        try:
            from . import _selective_scan_cpu
            _EXT = _selective_scan_cpu
        except Exception as exc:  # ImportError, or OSError/undefined symbol from a stale build
            _IMPORT_ERROR = exc
    return _EXT


def is_available() -> bool:
    """True when the compiled kernel imports."""
    return _load() is not None


def extension():
    """The compiled extension module; raises a RuntimeError with build instructions when missing."""
    ext = _load()
    if ext is None:
        raise RuntimeError(f'mmvssm: the fused CPU selective-scan kernel is not available '
                           f'({_IMPORT_ERROR!r}); {BUILD_HINT}')
    return ext


class _SelectiveScanCpuFn(torch.autograd.Function):
    """Inputs already in the kernel layout: compute dtype, contiguous, B/C as (b, G, L, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ext = extension()
        needs_grad = any(ctx.needs_input_grad)
        out, last, ckpt = ext.fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, needs_grad)
        ctx.delta_softplus = delta_softplus
        ctx.has = (D is not None, z is not None, delta_bias is not None)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(u)
        grads = extension().bwd(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, ckpt,
                                dout.contiguous(), None if dlast is None else dlast.contiguous())
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        return du, ddelta, dA, dB, dC, dD, dz, dbias, None


def selective_scan_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """Selective scan with the fused CPU kernel (inputs validated by ``selective_scan``).

    Computes in float64 when ``u`` is float64 and in float32 otherwise (bf16/fp16 inputs included);
    returns the output (and the last state) in ``u``'s dtype.
    """
    extension()  # fail early with the build hint
    if u.device.type != 'cpu':
        raise RuntimeError(f'selective_scan: the cpu backend needs CPU tensors, got {u.device}')
    dtype = compute_dtype(u)

    def prep(t):
        return None if t is None else t.to(dtype).contiguous()

    def time_major(t):  # (b, N, L) or (b, G, N, L) -> (b, G, L, N), contiguous
        return as_groups(t).to(dtype).transpose(-1, -2).contiguous()

    out, last = _SelectiveScanCpuFn.apply(prep(u), prep(delta), prep(A), time_major(B),
                                          time_major(C), prep(D), prep(z), prep(delta_bias),
                                          bool(delta_softplus))
    out = out.to(u.dtype)
    return (out, last.to(u.dtype)) if return_last_state else out


class CpuBackend(ScanBackend):
    """The fused C++ kernel: ``auto``'s first choice for CPU tensors when it is built."""
    name = 'cpu'
    device_types = frozenset({'cpu'})
    auto_rank = {'cpu': 10}
    missing_hint = ('the fused CPU kernel is not built (or the tensors are not on the CPU); build it with '
                    '`make kernel` (= `python setup.py build_ext --inplace`) or `pip install -e . '
                    '--no-build-isolation` from the repo root')

    def is_available(self, device: Optional[torch.device] = None) -> bool:
        return super().is_available(device) and is_available()

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


CPU = CpuBackend()
