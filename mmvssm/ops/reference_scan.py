"""``reference`` backend of :func:`mmvssm.ops.selective_scan`: the plain recurrence, the ground truth.

Made of ordinary differentiable torch ops only, one step at a time, so it runs on any device and traces
into any graph (it is the decomposition the ONNX export uses, :func:`mmvssm.ops.custom_ops.decompositions`).
"""
from typing import Optional

import torch
from torch import Tensor

from .scan_backend import ScanBackend, ScanOutput
from .scan_utils import as_groups, compute_dtype, finish, prepare_delta


def scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = False, return_last_state: bool = False) -> ScanOutput:
    """The recurrence step by step; same arguments and results as :func:`mmvssm.ops.selective_scan`."""
    dtype = compute_dtype(u)
    batch, dim, length = u.shape
    B, C = as_groups(B), as_groups(C)
    groups = B.shape[1]
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    uf, Af = u.to(dtype), A.to(dtype)
    # Per-channel B and C: (b, dim, N, L).
    Bc = B.to(dtype).repeat_interleave(dim // groups, dim=1)
    Cc = C.to(dtype).repeat_interleave(dim // groups, dim=1)
    h = uf.new_zeros(batch, dim, A.shape[1])
    ys = []
    # unbind() instead of [t] indexing keeps the autograd graph linear in L.
    for d_t, u_t, B_t, C_t in zip(delta.unbind(-1), uf.unbind(-1), Bc.unbind(-1), Cc.unbind(-1)):
        h = torch.exp(d_t[..., None] * Af) * h + (d_t * u_t)[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else uf.new_zeros(batch, dim, 0)
    out = finish(y, u, D, z, dtype, u.dtype)
    return (out, h.to(u.dtype)) if return_last_state else out


class ReferenceBackend(ScanBackend):
    name = 'reference'

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


REFERENCE = ReferenceBackend()
