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

Backends: ``reference`` (plain recurrence, the ground truth), ``chunked`` (pure PyTorch, fast and
differentiable on any device), ``cpu`` (fused C++ kernel, when built) and ``cuda`` (``mamba_ssm``'s kernel,
when installed). ``auto`` picks cuda -> cpu -> chunked by device and availability. The environment variable
``MMVSSM_SCAN_BACKEND`` forces a backend for every ``auto`` call.
"""
import os
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ('reference', 'chunked', 'cpu', 'cuda')
ENV_BACKEND = 'MMVSSM_SCAN_BACKEND'

ScanOutput = Union[Tensor, Tuple[Tensor, Tensor]]


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


# --------------------------------------------------------------------------------------------------
# Shared pre/post-processing
# --------------------------------------------------------------------------------------------------
def _compute_dtype(u: Tensor) -> torch.dtype:
    """The dtype every backend computes in: float64 for float64 ``u``, float32 otherwise (half included)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: Tensor, delta_bias: Optional[Tensor], delta_softplus: bool,
                   dtype: torch.dtype) -> Tensor:
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _as_groups(t: Tensor) -> Tensor:
    """(b, N, L) -> (b, 1, N, L); (b, G, N, L) unchanged."""
    return t.unsqueeze(1) if t.dim() == 3 else t


def _finish(y: Tensor, u: Tensor, D: Optional[Tensor], z: Optional[Tensor], dtype: torch.dtype,
            out_dtype: torch.dtype) -> Tensor:
    """Add the D skip, gate with silu(z) and cast to the output dtype."""
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y.to(out_dtype)


# --------------------------------------------------------------------------------------------------
# reference backend: the plain recurrence
# --------------------------------------------------------------------------------------------------
def _scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    dtype = _compute_dtype(u)
    batch, dim, length = u.shape
    B, C = _as_groups(B), _as_groups(C)
    groups = B.shape[1]
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
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
    out = _finish(y, u, D, z, dtype, u.dtype)
    return (out, h.to(u.dtype)) if return_last_state else out


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------
def _backend_module(name: str):
    """The module implementing an optional backend (imported lazily: they may be heavy or absent)."""
    if name == 'chunked':
        from . import chunked_scan
        return chunked_scan
    if name == 'cpu':
        from . import cpu_backend
        return cpu_backend
    from . import cuda_backend
    return cuda_backend


# The device type each compiled backend runs on; reference and chunked run anywhere.
_BACKEND_DEVICE = {'cpu': 'cpu', 'cuda': 'cuda'}


def _backend_available(name: str, device: Optional[torch.device] = None) -> bool:
    if name in ('reference', 'chunked'):
        return True
    if name not in _BACKEND_DEVICE:
        return False
    if device is not None and device.type != _BACKEND_DEVICE[name]:
        return False
    return bool(_backend_module(name).is_available())


def _unsupported_reason(name: str, u: Tensor, A: Tensor) -> Optional[str]:
    """Why an available backend still cannot run these inputs (e.g. N too large), or None."""
    if name not in _BACKEND_DEVICE:
        return None
    check = getattr(_backend_module(name), 'unsupported_reason', None)
    return check(u, A) if check is not None else None


def available_backends(device: Union[str, torch.device, None] = None) -> Tuple[str, ...]:
    """Names of the backends that can run on ``device`` (any device when None)."""
    dev = torch.device(device) if device is not None else None
    return tuple(name for name in BACKENDS if _backend_available(name, dev))


_MISSING_HINTS = {
    'cpu': 'the fused CPU kernel is not built (or the tensors are not on the CPU); build it with '
           '`make kernel` (= `python setup.py build_ext --inplace`) or `pip install -e . '
           '--no-build-isolation` from the repo root',
    'cuda': 'mamba_ssm\'s CUDA kernel did not import (or the tensors are not on a CUDA device); '
            'install it with `pip install mamba-ssm` on a CUDA machine',
}


def _resolve_backend(backend: str, u: Tensor, A: Tensor) -> str:
    """Pick the backend for these inputs.

    ``auto`` takes the first of cuda -> cpu -> chunked that is available on ``u``'s device and supports
    the inputs, unless ``$MMVSSM_SCAN_BACKEND`` names a backend. An explicitly requested (or forced)
    backend that cannot run is an error, never a silent fallback.
    """
    source = 'the `backend` argument'
    if backend == 'auto':
        forced = os.environ.get(ENV_BACKEND, '').strip().lower()
        if forced and forced != 'auto':
            backend, source = forced, f'${ENV_BACKEND}'
        else:
            for name in ('cuda', 'cpu', 'chunked'):
                if _backend_available(name, u.device) and _unsupported_reason(name, u, A) is None:
                    return name
    if backend not in BACKENDS:
        raise ValueError(f'selective_scan: unknown backend {backend!r} (from {source}); choose one of '
                         f"{('auto',) + BACKENDS}")
    if not _backend_available(backend, u.device):
        raise RuntimeError(f'selective_scan: backend {backend!r} was requested ({source}) but is not '
                           f'available for {u.device.type} tensors: {_MISSING_HINTS.get(backend, "")}')
    reason = _unsupported_reason(backend, u, A)
    if reason is not None:
        raise RuntimeError(f'selective_scan: backend {backend!r} was requested ({source}) but cannot '
                           f'run these inputs: {reason}; use backend="chunked" instead')
    return backend


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
    name = _resolve_backend(backend, u, A)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == 'reference':
        return _scan_reference(*args)
    module = _backend_module(name)
    impl = {'chunked': 'selective_scan_chunked', 'cpu': 'selective_scan_cpu',
            'cuda': 'selective_scan_cuda'}[name]
    return getattr(module, impl)(*args)


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
    if u.dim() != 4:
        raise ValueError(f'multi_direction_scan: `u` must be (batch, K, dim, L), got {tuple(u.shape)}')
    batch, k, dim, length = u.shape
    for name, t, shape in (('delta', delta, (batch, k, dim, length)), ('z', z, (batch, k, dim, length)),
                           ('A', A, (k, dim, A.shape[-1])), ('D', D, (k, dim)),
                           ('delta_bias', delta_bias, (k, dim)),
                           ('B', B, (batch, k, A.shape[-1], length)),
                           ('C', C, (batch, k, A.shape[-1], length))):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f'multi_direction_scan: `{name}` has shape {tuple(t.shape)}, expected {shape}')

    def fold(t):
        return None if t is None else t.reshape(batch, k * dim, length)

    y = selective_scan(fold(u), fold(delta), A.reshape(k * dim, -1), B, C,
                       None if D is None else D.reshape(k * dim),
                       fold(z), None if delta_bias is None else delta_bias.reshape(k * dim),
                       delta_softplus=delta_softplus, backend=backend)
    return y.view(batch, k, dim, length)
