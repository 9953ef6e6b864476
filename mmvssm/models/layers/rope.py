"""2-D rotary position embedding of the Vim dense-prediction runs (hustvl/Vim ``vim/rope.py``,
``VisionRotaryEmbeddingFast``, EVA-02 style), written from its definition:

* the D channels of a token are split in half: channels ``[0, D/2)`` rotate with the token's **row**,
  ``[D/2, D)`` with its **column**;
* inside each half, channel pairs ``(2k, 2k+1)``, k < D/4, are rotated as a complex number by the angle
  ``pos * w_k`` with ``w_k = 10000 ** (-2k / (D/2))``:
  ``(a, b) -> (a cos - b sin, b cos + a sin)``;
* positions are ``pos = i / g * pt`` for grid index i < g (``pt`` = the pretraining grid, 14 for 224/16):
  a grid of any size spans the same range [0, pt), as the official module built with ``ft_seq_len=g``.

Resolution (a decision, the official module cannot do it): the official buffers are built once for
``ft_seq_len = img_size // patch_size`` and fail on any other token count. We build the tables for the
grid of each input, ``(h, w)`` -> rows ``arange(h) / h * pt``, columns ``arange(w) / w * pt``, which is
exactly the official module built at ``ft_seq_len = h (= w)`` for square grids: the same rule that
rebuilding the official model at a new ``img_size`` applies. Position embeddings are resized the same way
(bicubically over the same span), so both position signals agree at every size.

The official module skips token 0 when the sequence length is odd (its legacy head class token); the
class token of the released models sits in the middle, so we do not guess from the length: the caller
passes the grid tokens only (:class:`~mmvssm.models.backbones.Vim` refuses RoPE with a class token).
"""
from typing import Dict, Tuple

import torch
from torch import Tensor, nn


def rope_tables(dims: int, grid: Tuple[int, int], pt_grid: int, theta: float = 10000., device=None,
                dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """cos / sin tables (h*w, dims), raster order, for a (h, w) token grid.

    In fp32 (default) they are computed with the official operation order, so a table equals the
    official buffers (``rope.freqs_cos``/``freqs_sin`` of a checkpoint) at the grid it was built for;
    ``dtype=torch.float64`` computes the same formula in double precision (for float64 inputs).
    """
    if dims % 4:
        raise ValueError(f'RoPE: the width {dims} must be a multiple of 4 (two axes x channel pairs)')
    half = dims // 2
    # official: 1 / theta ** (arange(0, dim, 2)[:dim // 2].float() / dim) with dim = D / 2
    freqs = 1. / (theta ** (torch.arange(0, half, 2, device=device)[:half // 2].to(dtype) / half))
    axes = []
    for size in grid:
        pos = torch.arange(size, device=device, dtype=dtype) / size * pt_grid  # positions span [0, pt)
        axes.append(torch.repeat_interleave(pos[:, None] * freqs, 2, dim=-1))  # (size, D/2): f0 f0 f1 f1 ..
    h, w = grid
    angles = torch.cat([axes[0][:, None, :].expand(h, w, half), axes[1][None, :, :].expand(h, w, half)],
                       dim=-1).reshape(h * w, dims)
    return angles.cos(), angles.sin()


def rotate_pairs(x: Tensor) -> Tensor:
    """(..., 2k) = -x[..., 2k+1], (..., 2k+1) = x[..., 2k]: multiplication of each pair by i."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class VisionRope(nn.Module):
    """Rotate tokens (B, h*w, D) in raster order by their 2-D grid position.

    Args:
        dims: token width D (a multiple of 4).
        pt_grid: the pretraining grid side (official ``pt_hw_seq_len``, 14 for 224 / 16); positions of
            every grid are scaled to span [0, pt_grid).
        theta: frequency base.

    The tables are not stored in the state dict (they follow from the arguments and the input grid);
    the official checkpoints' ``rope.freqs_*`` buffers are therefore dropped when loading. Tables are
    cached per (grid, device): one live entry, as inference sees one grid at a time.

    Shapes: (B, h*w, D) and (h, w) -> (B, h*w, D), fp32 or wider (the official multiplies by fp32
    buffers, which promotes half inputs).
    """

    def __init__(self, dims: int, pt_grid: int = 14, theta: float = 10000.) -> None:
        super().__init__()
        if dims % 4:
            raise ValueError(f'VisionRope: dims={dims} must be a multiple of 4')
        self.dims, self.pt_grid, self.theta = dims, pt_grid, theta
        self._cache: Dict[tuple, Tuple[Tensor, Tensor]] = {}

    def tables(self, grid: Tuple[int, int], device: torch.device,
               dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
        key = (tuple(grid), str(device), dtype)
        if key not in self._cache:
            self._cache.clear()
            self._cache[key] = rope_tables(self.dims, tuple(grid), self.pt_grid, self.theta, device, dtype)
        return self._cache[key]

    def forward(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        if x.shape[-2] != grid[0] * grid[1] or x.shape[-1] != self.dims:
            raise ValueError(f'VisionRope: tokens {tuple(x.shape)} do not match the grid {tuple(grid)} '
                             f'x {self.dims} channels (class tokens must be removed before rotating)')
        # fp32 tables as the official buffers (they promote half inputs to fp32); float64 stays float64
        cos, sin = self.tables(grid, x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
        return x * cos + rotate_pairs(x) * sin

    def extra_repr(self) -> str:
        return f'dims={self.dims}, pt_grid={self.pt_grid}, theta={self.theta}'
