"""EfficientVMamba's atrous (skip-sampled) scan order: which map position each token of the four directions
reads (:func:`atrous_scan_index`), and the gather/scatter between a map and its four sequences.

A (B, E, H, W) map (zero-padded to even H, W) is split into four sequences of L' = H W / 4 tokens:
direction k reads (row parity, column parity, order) = (even, even, row-major), (odd, even, column-major),
(even, odd, row-major), (odd, odd, column-major), as the official ``EfficientScan``. No dispatch here: the
backends (:mod:`.scan_backend`) and :func:`mmvssm.ops.atrous_scan` both use these.
"""
from functools import lru_cache
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_DIRECTIONS = 4


# --------------------------------------------------------------------------------------------------
# Atrous (skip-sampled) 4-direction scan order
# --------------------------------------------------------------------------------------------------
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
    # Cached in eager mode only: a graph capture (torch.compile/export) must trace the index ops, and a
    # fake tensor made while tracing must never be handed to a later eager call.
    if torch.compiler.is_compiling():
        return _build_index(height, width, device)
    return _cached_index(height, width, device)


@lru_cache(maxsize=64)
def _cached_index(height: int, width: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    return _build_index(height, width, device)


def _build_index(height: int, width: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    grid = torch.arange(height * width, device=device).view(height, width)
    index = torch.stack([grid[0::2, 0::2].flatten(), grid[1::2, 0::2].t().flatten(),
                         grid[0::2, 1::2].flatten(), grid[1::2, 1::2].t().flatten()])
    inverse = torch.empty_like(index.flatten())
    inverse[index.flatten()] = torch.arange(index.numel(), device=device)
    return index, inverse


def _direction_views(t: Tensor, row_dim: int) -> Iterator[Tensor]:
    """The four skip-sampled sub-grids of ``t`` (rows at ``row_dim``, columns next), each as the strided
    view a direction reads in its scan order, sub-grid rows then columns: (even, even), (odd, even)
    column-major, (even, odd), (odd, odd) column-major (:func:`atrous_scan_index`)."""
    rows = [slice(None)] * t.dim()

    def sub(r: int, c: int, col_major: bool) -> Tensor:
        rows[row_dim], rows[row_dim + 1] = slice(r, None, 2), slice(c, None, 2)
        v = t[tuple(rows)]
        return v.transpose(row_dim, row_dim + 1) if col_major else v

    # Lazily: a view made before an earlier one was written into would be a view of the (grad-less)
    # leaf, which autograd refuses to write into once the tensor requires grad.
    for r, c, col_major in ((0, 0, False), (1, 0, True), (0, 1, False), (1, 1, True)):
        yield sub(r, c, col_major)


def atrous_gather(x: Tensor) -> Tensor:
    """Split a map into its four skip-sampled scan sequences.

    Odd sizes are zero-padded at the bottom/right first; the padded zeros take part in the scan, as in
    the official code. Each direction is one strided copy of its sub-grid into a contiguous (B, 4, D, L')
    tensor (cheaper on CPU than an ``index_select`` with :func:`atrous_scan_index` and a transposed view,
    which the x_proj matmul then copied again).

    Args:
        x: (B, D, H, W).

    Returns:
        (B, 4, D, L') contiguous, L' = ceil(H/2) * ceil(W/2), direction k in its scan order.
    """
    batch, dim, height, width = x.shape
    if height % 2 or width % 2:  # F.pad copies the map even when it pads nothing
        x = F.pad(x, (0, width % 2, 0, height % 2))
    xs = x.new_empty(batch, NUM_DIRECTIONS, dim, x.shape[-2] * x.shape[-1] // NUM_DIRECTIONS)
    for k, view in enumerate(_direction_views(x, 2)):
        xs[:, k].view(view.shape).copy_(view)
    return xs


def padded_map(op: str, ys: Tensor, height: int, width: int) -> Tuple[int, int]:
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
    pad_h, pad_w = padded_map('atrous_scatter', ys, height, width)
    # Each direction copied straight to its strided sub-grid (one pass; a permuted copy and an
    # index_select with the inverse permutation made two).
    y = ys.new_empty(batch, pad_h, pad_w, dim)
    for d, view in enumerate(_direction_views(y, 1)):
        view.copy_(ys[:, d].reshape(batch, dim, *view.shape[1:3]).permute(0, 2, 3, 1))
    return y[:, :height, :width]
