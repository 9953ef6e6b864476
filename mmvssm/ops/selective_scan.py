"""The selective scan (Mamba S6) with interchangeable backends.

One public op, :func:`selective_scan`, with the conventions of ``mamba_ssm``'s ``selective_scan_fn``:

* ``u``, ``delta``, ``z``: (batch, dim, L)
* ``A``: (dim, N), real
* ``B``, ``C``: (batch, N, L) or (batch, groups, N, L), ``dim % groups == 0``
* ``D``, ``delta_bias``: (dim,)

Semantics (per batch element, channel d, state n, time t)::

    delta = softplus(delta + delta_bias)            # if delta_softplus
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = sum_n C_t * h_t + D * u_t
    y     = y * silu(z)                             # if z is given

Backends: ``reference`` (plain recurrence, the ground truth), ``chunked`` (pure PyTorch, differentiable on
any device, slow on GPUs), ``cpu`` (fused C++ kernel, when built), ``cuda`` (``mamba_ssm``'s kernel, when
installed) and ``triton`` (fused Triton kernels: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
``auto`` picks by the tensors' device: cuda -> triton -> chunked on GPUs (announcing ``chunked`` once),
cpu -> chunked on the CPU. :class:`use_backend` or the environment variable ``MMVSSM_SCAN_BACKEND`` forces
a backend for every ``auto`` call. Each backend is one :class:`~mmvssm.ops.scan_backend.ScanBackend` object,
registered in :mod:`mmvssm.ops.backends`, which also holds the dispatch rules.

In eager mode a call runs its backend directly (the backend's own autograd). While torch.compile,
torch.export or torch.jit.trace capture a graph, it calls the ``torch.ops.mmvssm`` operators of
:mod:`mmvssm.ops.custom_ops` instead, so the scan is one opaque node of known shape.
"""
from typing import Dict, Optional, Tuple, Union  # noqa: F401 (Dict, Union: public signatures)

import torch
from torch import Tensor

from . import backends, custom_ops
from .backends import (BACKENDS, ENV_BACKEND, auto_backend, available_backends, backend_for,  # noqa: F401
                       backend_plan, use_backend)
from .scan_backend import ScanOutput
from .scan_utils import bidirectional_in_scan_order, fold_directions


# --------------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------------
def _check_shape(name: str, t: Optional[Tensor], expected: Tuple[int, ...],
                 expected_str: str) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f'selective_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}')
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f'selective_scan: `{name}` has shape {tuple(t.shape)}, expected '
                         f'{expected_str} = {tuple(expected)}')


def _check_inputs(u, delta, A, B, C, D, z, delta_bias) -> int:
    """Validate shapes and dtypes; returns the number of groups of B/C."""
    for name, t in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C)):
        if not isinstance(t, Tensor):
            raise TypeError(f'selective_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}')
    if u.dim() != 3:
        raise ValueError(f'selective_scan: `u` must be (batch, dim, L), got shape {tuple(u.shape)}')
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'selective_scan: `A` has shape {tuple(A.shape)}, expected (dim, N) with '
                         f'dim = {dim}')
    n_state = A.shape[1]
    if A.is_complex():
        raise ValueError('selective_scan: complex `A` is not supported; pass a real (dim, N) tensor')
    for name, t in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('z', z),
                    ('delta_bias', delta_bias)):
        if t is not None and not t.is_floating_point():
            raise ValueError(f'selective_scan: `{name}` must be a floating-point tensor, got {t.dtype}')
    _check_shape('delta', delta, (batch, dim, length), '(batch, dim, L)')
    _check_shape('z', z, (batch, dim, length), '(batch, dim, L)')
    _check_shape('D', D, (dim,), '(dim,)')
    _check_shape('delta_bias', delta_bias, (dim,), '(dim,)')
    if B.dim() == 3:
        groups = 1
    elif B.dim() == 4:
        groups = B.shape[1]
    else:
        raise ValueError(f'selective_scan: `B` has shape {tuple(B.shape)}, expected (batch, N, L) or '
                         f'(batch, groups, N, L) with batch={batch}, N={n_state}, L={length}')
    if groups == 0 or dim % groups != 0:
        raise ValueError(f'selective_scan: `B` has {groups} groups, which must divide dim = {dim}')
    expected_bc = (batch, n_state, length) if groups == 1 and B.dim() == 3 else (
        batch, groups, n_state, length)
    expected_str = '(batch, N, L)' if B.dim() == 3 else '(batch, groups, N, L)'
    _check_shape('B', B, expected_bc, expected_str)
    _check_shape('C', C, expected_bc, expected_str)
    return groups


def selective_scan(u: Tensor,
                   delta: Tensor,
                   A: Tensor,
                   B: Tensor,
                   C: Tensor,
                   D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = False,
                   return_last_state: bool = False,
                   backend: str = 'auto') -> ScanOutput:
    """Selective scan; see the module docstring for shapes and semantics.

    Returns:
        Tensor (batch, dim, L) in ``u``'s dtype, and the last state (batch, dim, N) when
        ``return_last_state`` is True.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if custom_ops.capturing():
        out, last = torch.ops.mmvssm.selective_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                    bool(return_last_state), backends.requested(backend))
        return (out, last) if return_last_state else out
    return backends.resolve(backend, u, A).scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                return_last_state)


def _check_directions(op: str, u, delta, A, B, C, D, z, delta_bias, shared_z: bool) -> None:
    """Shapes of a K-direction call: u, delta (batch, K, dim, L); z the same, or (batch, dim, L) when
    ``shared_z``; A (K, dim, N); B, C (batch, K, N, L); D, delta_bias (K, dim)."""
    if not isinstance(u, Tensor) or u.dim() != 4:
        raise ValueError(f'{op}: `u` must be (batch, K, dim, L), got '
                         f'{tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__}')
    batch, k, dim, length = u.shape
    z_shape = (batch, dim, length) if shared_z else (batch, k, dim, length)
    for name, t, shape in (('delta', delta, (batch, k, dim, length)), ('z', z, z_shape),
                           ('A', A, (k, dim, A.shape[-1])), ('D', D, (k, dim)),
                           ('delta_bias', delta_bias, (k, dim)),
                           ('B', B, (batch, k, A.shape[-1], length)),
                           ('C', C, (batch, k, A.shape[-1], length))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f'{op}: `{name}` has shape {tuple(t.shape)}, expected {shape}')


def multi_direction_scan(u: Tensor,
                         delta: Tensor,
                         A: Tensor,
                         B: Tensor,
                         C: Tensor,
                         D: Optional[Tensor] = None,
                         z: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None,
                         delta_softplus: bool = False,
                         backend: str = 'auto') -> Tensor:
    """K scan directions in one batched call (directions folded into channels, B/C into groups).

    The caller permutes each direction's sequence beforehand (e.g. flips it) and un-permutes after.

    Args:
        u, delta, z: (batch, K, dim, L), already in each direction's scan order.
        A: (K, dim, N). D, delta_bias: (K, dim).
        B, C: (batch, K, N, L), each direction's own input/output projections.

    Returns:
        (batch, K, dim, L): each direction's output in its own scan order.
    """
    _check_directions('multi_direction_scan', u, delta, A, B, C, D, z, delta_bias, shared_z=False)
    fu, fdelta, fA, fD, fz, fbias = fold_directions(u, delta, A, D, z, delta_bias)
    # Through the module's selective_scan (by name): tools that swap it (utils/flops.py) see every scan.
    y = selective_scan(fu, fdelta, fA, B, C, fD, fz, fbias, delta_softplus=delta_softplus, backend=backend)
    return y.view(u.shape)


def reads_backward_in_place(backend: str, u: Tensor) -> bool:
    """Whether Vim's second direction is scanned backwards over the stored order for tensors like ``u``.

    True where the scan resolves to ``triton`` (its kernel walks the sequence from the end). Elsewhere the
    second direction is kept reversed, in the order it is scanned, between
    :func:`~mmvssm.ops.bidirectional_conv1d_silu` and :func:`bidirectional_scan`, as the official layer
    does: each layout moves the least data its backend allows.
    """
    return backends.resolve(backend, u, u.new_empty(1, 1)).reads_backward_in_place()


def bidirectional_scan(u: Tensor,
                       delta: Tensor,
                       A: Tensor,
                       B: Tensor,
                       C: Tensor,
                       D: Optional[Tensor] = None,
                       z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None,
                       delta_softplus: bool = False,
                       backend: str = 'auto') -> Tensor:
    """Vim's two scan directions over one sequence, summed in the stored order and gated by the same z.

    Direction 0 runs t = 0 .. L-1 over ``u[:, 0]``, direction 1 runs backwards in time. Where
    :func:`reads_backward_in_place` (the ``triton`` backend), ``u[:, 1]``, ``delta[:, 1]``, ``B[:, 1]``
    and ``C[:, 1]`` are in the stored order and one fused kernel scans direction 1 from the end and sums
    both outputs: nothing is flipped, stacked or copied. Elsewhere they are already reversed (scan order,
    as :func:`~mmvssm.ops.bidirectional_conv1d_silu` returns them for that backend), the directions run as
    one :func:`multi_direction_scan` and direction 1's output is flipped back.

    Args:
        u, delta: (batch, 2, dim, L), any strides.
        A: (2, dim, N). D, delta_bias: (2, dim).
        B, C: (batch, 2, N, L).
        z: (batch, dim, L) in the stored order, the gate of both directions.

    Returns:
        (batch, dim, L) in the stored order and ``u``'s dtype: ``y0[t] + y1[t]``, each ``* silu(z[t])``.
        From the fused kernel it is a view of (batch, L, dim) memory, so ``y.transpose(1, 2)`` (the
        layer's out_proj input) is contiguous.
    """
    _check_directions('bidirectional_scan', u, delta, A, B, C, D, z, delta_bias, shared_z=True)
    if u.shape[1] != 2:
        raise ValueError(f'bidirectional_scan: `u` must hold 2 directions (batch, 2, dim, L), got '
                         f'{tuple(u.shape)}')
    _check_inputs(u[:, 0], delta[:, 0], A[0], B[:, 0], C[:, 0], None if D is None else D[0], z,
                  None if delta_bias is None else delta_bias[0])
    impl = backends.resolve(backend, u, A)
    # The conv chose the layout without A: a backend that fell back for these inputs (N) cannot use it.
    if not impl.reads_backward_in_place() and reads_backward_in_place(backend, u):
        raise RuntimeError(f'bidirectional_scan: backend {impl.name!r} cannot run these inputs (N = '
                           f'{A.shape[-1]}) in the layout the conv produced; pass backend="chunked" to both')
    if impl.reads_backward_in_place():
        if custom_ops.capturing():
            return torch.ops.mmvssm.bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                                       backends.requested(backend))
        return impl.bidirectional_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    # Eager: the backend just resolved; a capture records the name asked for (resolved where it runs).
    scan_backend = backend if custom_ops.capturing() else impl.name

    def multi(*args):
        return multi_direction_scan(*args, backend=scan_backend)

    return bidirectional_in_scan_order(multi, u, delta, A, B, C, D, z, delta_bias, delta_softplus)
