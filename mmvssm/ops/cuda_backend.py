"""``cuda`` backend: dispatch to ``mamba_ssm``'s fused selective-scan CUDA kernel.

``mamba_ssm`` is imported lazily and any failure is treated as "not installed": on machines without Triton
the import itself raises, and broken builds raise OSError/RuntimeError rather than ImportError. Recent wheels
can also ship without the compiled ``selective_scan_cuda`` extension, in which case the call would fail.
"""
import functools
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from .scan_backend import ScanBackend

# Limits of the official kernel (mamba_ssm csrc/selective_scan/selective_scan.cpp).
MAX_STATE = 256
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _load_kernel() -> Optional[Callable]:
    """``mamba_ssm``'s ``selective_scan_fn``, or None when it cannot run here (cached)."""
    try:
        from mamba_ssm.ops import selective_scan_interface as interface
    except Exception:  # Triton missing, undefined symbols, CUDA init errors ...
        return None
    if getattr(interface, 'selective_scan_cuda', None) is None:
        return None
    return getattr(interface, 'selective_scan_fn', None)


def is_available() -> bool:
    """True when a CUDA device is present and ``mamba_ssm``'s kernel imports."""
    return torch.cuda.is_available() and _load_kernel() is not None


def unsupported_reason(u: Tensor, A: Tensor) -> Optional[str]:
    """Why the kernel cannot run these inputs, or None when it can.

    Dtype mismatches between ``u`` and delta/B/C/z are not a reason: :func:`selective_scan_cuda` casts them.
    """
    if u.dtype not in KERNEL_DTYPES:
        return f'`u` is {u.dtype}, the kernel supports {", ".join(map(str, KERNEL_DTYPES))}'
    if A.shape[-1] > MAX_STATE:
        return f'N = {A.shape[-1]} state dims, the kernel supports N <= {MAX_STATE}'
    if not u.is_cuda:
        return f'the tensors are on {u.device.type}, the kernel needs CUDA tensors'
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return 'a TorchScript/ONNX export is in progress, the kernel cannot be traced'
    return None


def _cast(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    # The kernel requires a unit stride along L (or the last dim) and exact dtypes.
    return None if t is None else t.to(dtype).contiguous()


def selective_scan_cuda(u: Tensor,
                        delta: Tensor,
                        A: Tensor,
                        B: Tensor,
                        C: Tensor,
                        D: Optional[Tensor] = None,
                        z: Optional[Tensor] = None,
                        delta_bias: Optional[Tensor] = None,
                        delta_softplus: bool = False,
                        return_last_state: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Run ``mamba_ssm``'s kernel; same arguments and results as :func:`selective_scan`.

    delta, B, C and z are cast to ``u``'s dtype and A, D, delta_bias to float32, as the kernel requires.
    B/C may be (batch, N, L) or grouped (batch, G, N, L); the kernel takes both. The returned last state
    carries no gradient (a limitation of the kernel) and is cast to ``u``'s dtype like the other backends.
    """
    kernel = _load_kernel()
    if kernel is None:
        raise RuntimeError('selective_scan: mamba_ssm\'s CUDA kernel is not importable; install it with '
                           '`pip install mamba-ssm` on a CUDA machine or use backend="chunked"')
    reason = unsupported_reason(u, A)
    if reason is not None:
        raise RuntimeError(f'selective_scan: backend "cuda" cannot run these inputs: {reason}; '
                           'use backend="chunked" instead')
    dtype = u.dtype
    out = kernel(_cast(u, dtype), _cast(delta, dtype), _cast(A, torch.float32), _cast(B, dtype),
                 _cast(C, dtype), _cast(D, torch.float32), _cast(z, dtype),
                 _cast(delta_bias, torch.float32), delta_softplus, return_last_state)
    if return_last_state:
        y, last = out
        return y, _NoGradThrough.apply(last.to(dtype))
    return out


class _NoGradThrough(torch.autograd.Function):
    """Identity whose backward refuses: mamba_ssm's kernel returns no gradient for the last state."""

    @staticmethod
    def forward(ctx, last: Tensor) -> Tensor:
        return last.view_as(last)

    @staticmethod
    def backward(ctx, grad: Tensor):
        raise RuntimeError('selective_scan: backend "cuda" (mamba_ssm) cannot backpropagate through the '
                           'returned last state; use backend="triton" (or "chunked"), which can')


class CudaBackend(ScanBackend):
    """``mamba_ssm``'s kernel: ``auto``'s first choice for CUDA tensors when it is installed."""
    name = 'cuda'
    device_types = frozenset({'cuda'})
    auto_rank = {'cuda': 10}
    last_state_grad = False
    missing_hint = ('mamba_ssm\'s CUDA kernel did not import (or the tensors are not on a CUDA device); '
                    'install it with `pip install --no-build-isolation mamba-ssm` on a CUDA machine')

    def is_available(self, device: Optional[torch.device] = None) -> bool:
        return super().is_available(device) and is_available()

    def unsupported_reason(self, u: Tensor, A: Tensor) -> Optional[str]:
        return unsupported_reason(u, A)

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return selective_scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


CUDA = CudaBackend()
