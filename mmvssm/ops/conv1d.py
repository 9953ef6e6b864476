"""Vim's depthwise conv1d + SiLU for both scan directions: :func:`bidirectional_conv1d_silu`.

The official layer flips the sequence, runs a causal depthwise conv with the backward direction's weights
and flips the result back. The same numbers come from one anti-causal conv with the taps reversed, so the
input is never flipped. A backend that reads Vim's second direction in place (``triton``: fused kernels,
forward and backward, that read the input in place and write both directions into one (batch, 2, dim, L)
tensor) gets that layout; elsewhere K shifted multiply-adds over one zero-padded buffer of u and flip(u)
(``scan_utils.conv1d_silu_in_scan_order``), direction 1 reversed as the official layer keeps it.
"""
from typing import Optional

import torch
from torch import Tensor

from . import backends, custom_ops
from .scan_utils import conv1d_silu_in_scan_order
# The Triton conv's tiles, where tools/analysis_tools/triton_resources.py reads them.
from .triton_backend import CONV_BLOCK_D as BLOCK_D  # noqa: F401
from .triton_backend import CONV_BLOCK_L as BLOCK_L  # noqa: F401
from .triton_backend import CONV_NUM_WARPS as NUM_WARPS  # noqa: F401


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
    impl = backends.resolve(backend, u, u.new_empty(1, 1))
    if not impl.reads_backward_in_place():
        return conv1d_silu_in_scan_order(u, weight0, bias0, weight1, bias1)
    if custom_ops.capturing():
        return torch.ops.mmvssm.bidirectional_conv1d_silu(u, weight0, bias0, weight1, bias1,
                                                          backends.requested(backend))
    return impl.bidirectional_conv1d_silu(u, weight0, bias0, weight1, bias1)
