"""EfficientVMamba's atrous (skip-sampled) 4-direction scan: :func:`atrous_scan` and its scan orders.

A (B, E, H, W) map (zero-padded to even H, W) is split into four sequences of L' = H W / 4 tokens:
direction k reads (row parity, column parity, order) = (even, even, row-major), (odd, even, column-major),
(even, odd, row-major), (odd, odd, column-major), as the official ``EfficientScan``. Each is scanned with its
own parameters and every output token goes back to its map position.
"""
from typing import Optional

import torch
from torch import Tensor

from . import backends, custom_ops
from .atrous_index import NUM_DIRECTIONS, atrous_gather, atrous_scan_index, atrous_scatter, padded_map
from .scan_backend import ATROUS
from .scan_utils import atrous_by_directions
from .selective_scan import multi_direction_scan

__all__ = ['NUM_DIRECTIONS', 'atrous_gather', 'atrous_scan', 'atrous_scan_index', 'atrous_scatter']


def atrous_scan(xs: Tensor,
                delta: Tensor,
                A: Tensor,
                B: Tensor,
                C: Tensor,
                D: Optional[Tensor] = None,
                delta_bias: Optional[Tensor] = None,
                delta_softplus: bool = False,
                height: int = 0,
                width: int = 0,
                backend: str = 'auto') -> Tensor:
    """The four directions' selective scans of a ``height x width`` map, returned channels-last.

    Computes in float32 (or float64) whatever the input dtype, as the official code runs its kernel on
    ``.float()`` inputs, and returns that dtype. With the ``triton`` backend one kernel reads the inputs in
    their own dtype (no casts) and writes each token at its map position (no scatter); the other backends
    cast, run :func:`multi_direction_scan` and scatter with :func:`atrous_scatter`.

    Args:
        xs, delta: (batch, 4, dim, L') from :func:`atrous_gather`, L' = ceil(H/2) ceil(W/2).
        A: (4, dim, N). D, delta_bias: (4, dim). B, C: (batch, 4, N, L').
        height, width: the map's size before padding.

    Returns:
        (batch, height, width, dim).
    """
    padded_map('atrous_scan', xs, height, width)
    impl = backends.resolve(backend, xs, A)
    if ATROUS not in impl.layouts:

        def multi(*args):  # through multi_direction_scan: tools that swap selective_scan see the scans
            return multi_direction_scan(*args, backend=backend if custom_ops.capturing() else impl.name)

        return atrous_by_directions(multi, xs, delta, A, B, C, D, delta_bias, delta_softplus, height, width)
    if custom_ops.capturing():
        return torch.ops.mmvssm.atrous_scan(xs, delta, A, B, C, D, delta_bias, bool(delta_softplus), height,
                                            width, backends.requested(backend))
    return impl.atrous_scan(xs, delta, A, B, C, D, delta_bias, delta_softplus, height, width)
