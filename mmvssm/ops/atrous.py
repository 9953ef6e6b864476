"""EfficientVMamba's atrous (skip-sampled) 4-direction scan: :func:`atrous_scan` and its scan orders.

A (B, E, H, W) map (zero-padded to even H, W) is split into four sequences of L' = H W / 4 tokens:
direction k reads (row parity, column parity, order) = (even, even, row-major), (odd, even, column-major),
(even, odd, row-major), (odd, odd, column-major), as the official ``EfficientScan``. Each is scanned with its
own parameters and every output token goes back to its map position.
"""
from functools import lru_cache
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .selective_scan import _backend_module, _resolve_backend, multi_direction_scan

NUM_DIRECTIONS = 4


# --------------------------------------------------------------------------------------------------
# Atrous (skip-sampled) 4-direction scan order
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def atrous_scan_index(height: int, width: int,
                      device: torch.device = torch.device('cpu')) -> Tuple[Tensor, Tensor]:
    """Flat grid positions of the four skip-sampled scan sequences of an even ``height x width`` map.

    Direction k reads (row parity, column parity, order) = (even, even, row-major),
    (odd, even, column-major), (even, odd, row-major), (odd, odd, column-major), as the official
    ``EfficientScan`` (column-major = read from the transposed map).

    Returns:
        index: (4, L') with L' = height * width / 4; ``index[k, t]`` is the flat position
            (row * width + col) of token t of direction k. The four rows partition the grid.
        inverse: (height * width,), the inverse permutation of ``index.flatten()``.
    """
    if height % 2 or width % 2:
        raise ValueError(f'atrous_scan_index needs an even (padded) map, got {height}x{width}')
    grid = torch.arange(height * width, device=device).view(height, width)
    index = torch.stack([grid[0::2, 0::2].flatten(), grid[1::2, 0::2].t().flatten(),
                         grid[0::2, 1::2].flatten(), grid[1::2, 1::2].t().flatten()])
    inverse = torch.empty_like(index.flatten())
    inverse[index.flatten()] = torch.arange(index.numel(), device=device)
    return index, inverse


def atrous_gather(x: Tensor) -> Tensor:
    """Split a map into its four skip-sampled scan sequences (one gather).

    Odd sizes are zero-padded at the bottom/right first; the padded zeros take part in the scan, as in
    the official code.

    Args:
        x: (B, D, H, W).

    Returns:
        (B, 4, D, L') with L' = ceil(H/2) * ceil(W/2), direction k in its scan order.
    """
    batch, dim, height, width = x.shape
    x = F.pad(x, (0, width % 2, 0, height % 2))
    index, _ = atrous_scan_index(height + height % 2, width + width % 2, x.device)
    xs = x.flatten(2).index_select(2, index.flatten())
    return xs.view(batch, dim, NUM_DIRECTIONS, -1).transpose(1, 2)


def _padded_map(op: str, ys: Tensor, height: int, width: int) -> Tuple[int, int]:
    """The even map size the four (B, 4, D, L') sequences ``ys`` cover; a clear error if they do not fit
    a ``height x width`` map."""
    pad_h, pad_w = height + height % 2, width + width % 2
    if ys.dim() != 4 or ys.shape[1] != NUM_DIRECTIONS or ys.shape[-1] * NUM_DIRECTIONS != pad_h * pad_w:
        raise ValueError(f'{op}: got sequences {tuple(ys.shape)}, expected (B, 4, D, '
                         f'{pad_h * pad_w // NUM_DIRECTIONS}) for a {height}x{width} map')
    return pad_h, pad_w


def atrous_scatter(ys: Tensor, height: int, width: int) -> Tensor:
    """Inverse of :func:`atrous_gather`: put every token back at its grid position, crop the padding.

    Args:
        ys: (B, 4, D, L') sequences in scan order.
        height, width: size of the map before padding.

    Returns:
        (B, height, width, D), channels-last (what the following LayerNorm wants).
    """
    batch, k, dim, length = ys.shape
    pad_h, pad_w = _padded_map('atrous_scatter', ys, height, width)
    _, inverse = atrous_scan_index(pad_h, pad_w, ys.device)
    y = ys.permute(0, 1, 3, 2).reshape(batch, k * length, dim).index_select(1, inverse)
    return y.view(batch, pad_h, pad_w, dim)[:, :height, :width]


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
    pad_h, pad_w = _padded_map('atrous_scan', xs, height, width)
    dtype = torch.promote_types(xs.dtype, torch.float32)
    if _resolve_backend(backend, xs, A) == 'triton':
        y = _backend_module('triton').atrous_scan_triton(xs, delta, A, B, C, D, delta_bias, delta_softplus,
                                                         (pad_h, pad_w), dtype)
        return y[:, :height, :width]
    ys = multi_direction_scan(xs.to(dtype), delta.to(dtype), A.to(dtype), B.to(dtype), C.to(dtype),
                              None if D is None else D.to(dtype),
                              delta_bias=None if delta_bias is None else delta_bias.to(dtype),
                              delta_softplus=delta_softplus, backend=backend)
    return atrous_scatter(ys, height, width)
