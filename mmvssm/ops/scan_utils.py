"""Pieces shared by the selective-scan backends: the compute-dtype rule, delta preparation, B/C grouping
and the D skip / silu(z) gate. Backends import these from here; ``selective_scan`` dispatches to them."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


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
