"""Vim's depthwise conv1d + SiLU for both scan directions: :func:`bidirectional_conv1d_silu`.

The official layer flips the sequence, runs a causal depthwise conv with the backward direction's weights
and flips the result back. The same numbers come from one anti-causal conv with the taps reversed, so the
input is never flipped. With the ``triton`` scan backend this runs as fused Triton kernels (forward and
backward) that read the input in place and write both directions into one (batch, 2, dim, L) tensor;
elsewhere as two ``F.conv1d`` calls, direction 1 reversed as the official layer keeps it.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan_utils import cdiv
from .selective_scan import reads_backward_in_place

BLOCK_D, BLOCK_L, NUM_WARPS = 16, 64, 4  # (channels, steps) a program


def _check_triton_conv(kernel_size: int) -> None:
    if kernel_size & (kernel_size - 1):
        raise RuntimeError(f'bidirectional_conv1d_silu: the Triton kernel needs a power-of-two kernel size, '
                           f'got {kernel_size}; use backend="chunked" (PyTorch conv)')


def _conv_torch(u: Tensor, w0: Tensor, b0: Optional[Tensor], w1: Tensor, b1: Optional[Tensor]) -> Tensor:
    """Direction 1 in scan order, as the official layer: causal conv of the reversed sequence."""
    dim, length, k = u.shape[1], u.shape[2], w0.shape[-1]
    y0 = F.conv1d(u, w0, b0, padding=k - 1, groups=dim)[..., :length]
    y1 = F.conv1d(u.flip(-1), w1, b1, padding=k - 1, groups=dim)[..., :length]
    return F.silu(torch.stack([y0, y1], dim=1))


class _BidirectionalConvTritonFn(torch.autograd.Function):
    """u (batch, dim, L), any strides; weights (dim, K); biases (dim,)."""

    @staticmethod
    def forward(ctx, u, w0, b0, w1, b1):
        from . import triton_conv_kernels as kernels
        batch, dim, length = u.shape
        k = w0.shape[-1]
        y = torch.empty((batch, 2, dim, length), dtype=u.dtype, device=u.device)
        grid = (cdiv(dim, BLOCK_D), batch, cdiv(length, BLOCK_L))
        kernels.conv_fwd_kernel[grid](u, w0, w1, b0, b1, y, dim, length, *u.stride(), *w0.stride(),
                                      *w1.stride(), K=k, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L,
                                      num_warps=NUM_WARPS)
        ctx.save_for_backward(u, w0, b0, w1, b1)
        return y

    @staticmethod
    def backward(ctx, dy):
        from . import triton_conv_kernels as kernels
        u, w0, b0, w1, b1 = ctx.saved_tensors
        batch, dim, length = u.shape
        k = w0.shape[-1]
        f32 = dict(dtype=torch.float32, device=u.device)
        g = torch.empty((batch, 2, dim, length), **f32)
        dw0, dw1 = torch.zeros((dim, k), **f32), torch.zeros((dim, k), **f32)
        db0, db1 = torch.zeros(dim, **f32), torch.zeros(dim, **f32)
        grid = (cdiv(dim, BLOCK_D), batch, cdiv(length, BLOCK_L))
        kernels.conv_bwd_preact_kernel[grid](u, w0, w1, b0, b1, dy, g, dw0, dw1, db0, db1, dim, length,
                                             *u.stride(), *w0.stride(), *w1.stride(), *dy.stride(),
                                             K=k, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L, num_warps=NUM_WARPS)
        du = torch.empty((batch, dim, length), dtype=u.dtype, device=u.device)
        kernels.conv_bwd_input_kernel[grid](g, w0, w1, du, dim, length, *w0.stride(), *w1.stride(),
                                            K=k, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L, num_warps=NUM_WARPS)
        return du, dw0.to(w0.dtype), db0.to(b0.dtype), dw1.to(w1.dtype), db1.to(b1.dtype)


def bidirectional_conv1d_silu(u: Tensor, weight0: Tensor, bias0: Optional[Tensor], weight1: Tensor,
                              bias1: Optional[Tensor], backend: str = 'auto') -> Tensor:
    """Both directions of Vim's conv1d + SiLU, in the layout :func:`~mmvssm.ops.bidirectional_scan` reads.

    Direction 0 is ``silu(causal_conv(u, weight0))``; direction 1 the official
    ``silu(causal_conv(flip(u), weight1))``. Where :func:`~mmvssm.ops.reads_backward_in_place` (the
    ``triton`` backend), direction 1 is returned in the stored order (an anti-causal conv with reversed
    taps, both directions written by one kernel, nothing flipped); elsewhere in scan order (reversed).

    Args:
        u: (batch, dim, L), any strides.
        weight0, weight1: (dim, 1, K) depthwise weights of the forward / backward direction (the official
            ``conv1d`` / ``conv1d_b``), bias0, bias1: (dim,).
        backend: the scan backend of the layer.

    Returns:
        (batch, 2, dim, L).
    """
    dim = u.shape[1]
    for name, w in (('weight0', weight0), ('weight1', weight1)):
        if w.dim() != 3 or w.shape[:2] != (dim, 1):
            raise ValueError(f'bidirectional_conv1d_silu: `{name}` has shape {tuple(w.shape)}, expected a '
                             f'depthwise (dim={dim}, 1, K) weight')
    if weight0.shape != weight1.shape:
        raise ValueError(f'bidirectional_conv1d_silu: weights of different shapes {tuple(weight0.shape)} '
                         f'and {tuple(weight1.shape)}')
    if not reads_backward_in_place(backend, u):
        return _conv_torch(u, weight0, bias0, weight1, bias1)
    _check_triton_conv(weight0.shape[-1])
    if bias0 is None or bias1 is None:  # a missing bias contributes nothing
        zeros = u.new_zeros(dim)
        bias0, bias1 = (zeros if bias0 is None else bias0), (zeros if bias1 is None else bias1)
    return _BidirectionalConvTritonFn.apply(u, weight0.squeeze(1), bias0, weight1.squeeze(1), bias1)
