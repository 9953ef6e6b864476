"""The selective scan as a few large tensor ops per block of time steps: the form graph exporters get.

:func:`scan_segsum` computes what :func:`~mmvssm.ops.reference_scan.scan_reference` does, but instead of one
small op group per time step it handles ``block`` steps at once (Mamba-2's "segment sum" form): within a
block, with ``S_t = sum_{s<=t} delta_s A`` (a cumulative sum),

    h_t = exp(S_t) h_in + sum_{s<=t} exp(S_t - S_s) delta_s u_s B_s,        y_t = <C_t, h_t>,

where the (t, s) decays are one masked exponential (s > t masked to exp(-inf) = 0 before it can overflow),
and only the state between blocks is carried step to step. A graph of L / block block-groups instead of L
step-groups: an ONNX export of Vim-T (L = 197) holds about 13 of them per scan instead of 197.
Plain differentiable torch ops; float32 (float64 for float64 ``u``), like every backend.
"""
from typing import Optional

import torch
from torch import Tensor

from .scan_backend import ScanBackend, ScanOutput
from .scan_utils import as_groups, compute_dtype, finish, prepare_delta

BLOCK = 16


def scan_segsum(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                return_last_state: bool = False, block: int = BLOCK) -> ScanOutput:
    """Same arguments and results as :func:`mmvssm.ops.selective_scan`."""
    dtype = compute_dtype(u)
    batch, dim, length = u.shape
    B, C = as_groups(B), as_groups(C)
    groups = B.shape[1]
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)  # (b, D, L)
    Af = A.to(dtype)  # (D, N)
    Bc = B.to(dtype).repeat_interleave(dim // groups, dim=1)  # (b, D, N, L)
    Cc = C.to(dtype).repeat_interleave(dim // groups, dim=1)
    x = (delta * u.to(dtype)).unsqueeze(2) * Bc  # delta_s u_s B_s: (b, D, N, L)
    h = u.new_zeros(batch, dim, A.shape[1], dtype=dtype)
    ys = []
    for t0 in range(0, length, block):
        t1 = min(t0 + block, length)
        k = t1 - t0
        S = torch.cumsum(delta[..., t0:t1].unsqueeze(2) * Af[..., None], dim=-1)  # (b, D, N, k)
        diff = S.unsqueeze(-1) - S.unsqueeze(-2)  # (b, D, N, t, s) = S_t - S_s
        causal = torch.ones(k, k, dtype=torch.bool, device=u.device).tril()
        decay = torch.exp(torch.where(causal, diff, torch.full_like(diff, float('-inf'))))
        states = torch.matmul(decay, x[..., t0:t1].unsqueeze(-1)).squeeze(-1) \
            + torch.exp(S) * h.unsqueeze(-1)  # h_t for t in the block: (b, D, N, k)
        ys.append((states * Cc[..., t0:t1]).sum(2))  # (b, D, k)
        h = states[..., -1]
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0, dtype=dtype)
    out = finish(y, u, D, z, dtype, u.dtype)
    return (out, h.to(u.dtype)) if return_last_state else out


class SegsumScan(ScanBackend):
    """:func:`scan_segsum` as a backend object: the decomposition of the ``mmvssm`` ops for graph exporters
    (:func:`mmvssm.ops.custom_ops.decompositions`). Not registered for dispatch: eager scans have faster
    backends; this one trades O(block) more arithmetic per step for a small graph."""
    name = 'segsum'

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return scan_segsum(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


SEGSUM = SegsumScan()
