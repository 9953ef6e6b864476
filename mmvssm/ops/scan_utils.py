"""Pieces shared by the selective-scan backends and the dispatcher: the compute-dtype rule, delta
preparation, B/C grouping, the D skip / silu(z) gate, and the multi-direction compositions. Imports no
backend and no dispatcher."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .atrous_index import atrous_scatter


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for positive ints (kernel grid sizes)."""
    return -(-a // b)


def compute_dtype(u: Tensor) -> torch.dtype:
    """The dtype every backend computes in: float64 for float64 ``u``, float32 otherwise (half included)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def prepare_delta(delta: Tensor, delta_bias: Optional[Tensor], delta_softplus: bool,
                  dtype: torch.dtype) -> Tensor:
    """softplus(delta + delta_bias) (each step optional) in ``dtype``."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def as_groups(t: Tensor) -> Tensor:
    """(b, N, L) -> (b, 1, N, L) view; (b, G, N, L) unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t


def finish(y: Tensor, u: Tensor, D: Optional[Tensor], z: Optional[Tensor], dtype: torch.dtype,
           out_dtype: torch.dtype) -> Tensor:
    """Add the D skip, gate with silu(z) and cast to the output dtype."""
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(out_dtype)


# --------------------------------------------------------------------------------------------------
# Compositions of the multi-direction layouts from a K-direction scan ``multi(u, delta, A, B, C, D, z,
# delta_bias, delta_softplus)`` on (batch, K, dim, L) tensors (the public multi_direction_scan, or a
# backend's own): shared by the dispatcher's unfused path and the backends' defaults.
# --------------------------------------------------------------------------------------------------
def fold_directions(u: Tensor, delta: Tensor, A: Tensor, D: Optional[Tensor], z: Optional[Tensor],
                    delta_bias: Optional[Tensor]):
    """K directions folded into channels: (batch, K, dim, L) -> (batch, K dim, L), A (K, dim, N) ->
    (K dim, N), D and delta_bias (K, dim) -> (K dim,). B, C (batch, K, N, L) are already K groups."""
    batch, k, dim, length = u.shape

    def fold(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.reshape(batch, k * dim, length)

    return (fold(u), fold(delta), A.reshape(k * dim, -1), None if D is None else D.reshape(k * dim),
            fold(z), None if delta_bias is None else delta_bias.reshape(k * dim))


def reverse_second(t: Tensor) -> Tensor:
    """(batch, 2, ..., L): direction 1 reversed in time (stored order <-> scan order)."""
    return torch.stack([t[:, 0], t[:, 1].flip(-1)], dim=1)


def bidirectional_in_scan_order(multi, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                                delta_softplus: bool) -> Tensor:
    """Vim's two directions with direction 1 already in scan order (reversed); z (batch, dim, L) in the
    stored order. Returns the summed (batch, dim, L) in the stored order and ``u``'s dtype.

    Both directions share the gate, so it is applied once after the sum, ``(y0 + flip(y1)) * silu(z)``
    in the compute dtype, instead of scanning with a stacked ``[z, flip(z)]``: that gathered copy of the
    strided z cost more than the scan's own gating (the same value up to rounding order).
    """
    y = multi(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
    if z is None:
        return y[:, 0] + y[:, 1].flip(-1)
    dtype = compute_dtype(u)
    return ((y[:, 0].to(dtype) + y[:, 1].flip(-1).to(dtype)) * F.silu(z.to(dtype))).to(u.dtype)


def conv1d_silu_in_scan_order(u: Tensor, w0: Tensor, b0: Optional[Tensor], w1: Tensor,
                              b1: Optional[Tensor]) -> Tensor:
    """Vim's conv1d + SiLU of both directions, direction 1 in scan order as the official layer computes
    it (causal conv of the reversed sequence). u (batch, dim, L), weights (dim, 1, K) -> (batch, 2, dim, L).

    The depthwise conv is K multiply-adds of shifted views of one zero-padded (batch, 2, dim, K-1+L)
    buffer holding u and flip(u): two grouped ``F.conv1d`` calls (oneDNN's depthwise path, each copying
    the strided u), a flip and a stack cost several times more on CPU for Vim's K = 4.
    """
    batch, dim, length = u.shape
    k = w0.shape[-1]
    padded = u.new_empty(batch, 2, dim, k - 1 + length)
    padded[..., :k - 1] = 0
    padded[:, 0, :, k - 1:] = u
    padded[:, 1, :, k - 1:] = u.flip(-1)
    w = torch.stack([w0[:, 0], w1[:, 0]]).to(u.dtype)[..., None]  # (2, dim, K, 1)
    if b0 is None and b1 is None:
        y = padded[..., :length] * w[:, :, 0]
    else:
        zero = u.new_zeros(dim)
        bias = torch.stack([zero if b0 is None else b0.to(u.dtype), zero if b1 is None else b1.to(u.dtype)])
        y = torch.addcmul(bias[..., None], padded[..., :length], w[:, :, 0])
    for i in range(1, k):
        y.addcmul_(padded[..., i:i + length], w[:, :, i])  # in place on y (autograd saves the operands)
    return F.silu(y, inplace=not torch.is_grad_enabled())


def atrous_by_directions(multi, xs: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, height: int,
                         width: int) -> Tensor:
    """EfficientVMamba's four directions cast to float32 (float64 stays), scanned and scattered back to a
    (batch, height, width, dim) map."""
    dtype = torch.promote_types(xs.dtype, torch.float32)

    def cast(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.to(dtype)

    ys = multi(cast(xs), cast(delta), cast(A), cast(B), cast(C), cast(D), None, cast(delta_bias),
               delta_softplus)
    return atrous_scatter(ys, height, width)
