"""Pieces of the Mamba selective-scan mixer shared by Vim's and EfficientVMamba's mixers.

Both follow Mamba's parametrisation: a step size ``delta = softplus(dt_proj(x) + dt_bias)`` of rank R,
a diagonal state matrix ``A = -exp(A_log)`` (N states per channel) initialised to ``-[1, 2, ..., N]``
(S4D-real), and ``D`` a per-channel skip. The layouts differ (Vim: one Linear per direction; EfficientVMamba:
K directions stacked in one tensor), so the initialisers below act on any tensor of the right last axis.
"""
import math
from typing import Union

import torch
from torch import Tensor


def dt_rank_for(dims: int, dt_rank: Union[int, str]) -> int:
    """Rank R of the step-size projection; ``'auto'`` is Mamba's ceil(D / 16)."""
    return math.ceil(dims / 16) if dt_rank == 'auto' else int(dt_rank)


@torch.no_grad()
def init_A_log_(A_log: Tensor) -> Tensor:  # noqa: N802,N803  (Mamba's names)
    """Fill (..., N) with log(1..N) along the last axis (S4D-real: A = -[1, ..., N])."""
    states = torch.arange(1, A_log.shape[-1] + 1, dtype=torch.float32)
    return A_log.copy_(states.log().expand_as(A_log))


@torch.no_grad()
def init_dt_proj_weight_(weight: Tensor, dt_rank: int) -> Tensor:
    """Mamba's 'random' dt_proj init: U(-R^-1/2, R^-1/2)."""
    std = dt_rank ** -0.5
    return weight.uniform_(-std, std)


@torch.no_grad()
def init_dt_bias_(bias: Tensor, dt_min: float = 1e-3, dt_max: float = 0.1,
                  dt_floor: float = 1e-4) -> Tensor:
    """Fill ``bias`` so that ``softplus(bias)`` is log-uniform in [dt_min, dt_max] (clamped at dt_floor).

    dt = exp(U(log dt_min, log dt_max)), bias = dt + log(-expm1(-dt)) (the inverse of softplus).
    """
    dt = torch.exp(torch.rand(bias.shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return bias.copy_(dt + torch.log(-torch.expm1(-dt)))
