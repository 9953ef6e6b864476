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
a backend for every ``auto`` call.
"""
import logging
import os
import warnings
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .scan_utils import as_groups, compute_dtype, finish, prepare_delta

BACKENDS = ('reference', 'chunked', 'cpu', 'cuda', 'triton')
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
# reference backend: the plain recurrence
# --------------------------------------------------------------------------------------------------
def _scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
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
    if name == 'triton':
        from . import triton_backend
        return triton_backend
    from . import cuda_backend
    return cuda_backend


# The device type each compiled backend runs on; reference and chunked run anywhere. Triton also runs CPU
# tensors under its interpreter (TRITON_INTERPRET=1), which only an explicit request uses.
_BACKEND_DEVICE = {'cpu': 'cpu', 'cuda': 'cuda', 'triton': 'cuda'}
# What ``auto`` tries, fastest first, by the device type of the tensors.
AUTO_ORDER = {'cuda': ('cuda', 'triton', 'chunked'), 'cpu': ('cpu', 'chunked')}


def _backend_available(name: str, device: Optional[torch.device] = None) -> bool:
    if name in ('reference', 'chunked'):
        return True
    if name not in _BACKEND_DEVICE:
        return False
    if device is not None and device.type != _BACKEND_DEVICE[name]:
        if not (name == 'triton' and device.type == 'cpu'):
            return False
        return _backend_module(name).is_available(device)
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


def auto_backend(device: Union[str, torch.device]) -> str:
    """The backend ``auto`` uses for tensors on ``device`` (before per-input limits such as N <= 256),
    after ``use_backend`` and ``$MMVSSM_SCAN_BACKEND``."""
    dev = torch.device(device)
    forced = _forced_backend()
    if forced is not None:
        return forced[0]
    return next(name for name in AUTO_ORDER.get(dev.type, ('chunked', )) if _backend_available(name, dev))


def backend_for(backend: str, device: Union[str, torch.device]) -> str:
    """The backend a scan call with ``backend`` uses on ``device`` (before per-input limits); raises
    ValueError for an unknown name."""
    backend = _check_name(backend, 'the `backend` argument')
    return auto_backend(device) if backend == 'auto' else backend


def backend_plan(backend: str = 'auto') -> Dict[str, str]:
    """The backend that scans with ``backend`` will use for each device type present, e.g.
    ``{'cpu': 'cpu', 'cuda': 'triton'}``; raises ValueError for an unknown name."""
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    return {dev: backend_for(backend, dev) for dev in devices}


_MISSING_HINTS = {
    'cpu': 'the fused CPU kernel is not built (or the tensors are not on the CPU); build it with '
           '`make kernel` (= `python setup.py build_ext --inplace`) or `pip install -e . '
           '--no-build-isolation` from the repo root',
    'cuda': 'mamba_ssm\'s CUDA kernel did not import (or the tensors are not on a CUDA device); '
            'install it with `pip install --no-build-isolation mamba-ssm` on a CUDA machine',
    'triton': 'Triton is not installed, cannot build kernels here (see the warning it gave), or the '
              'tensors are not on a CUDA device (CPU tensors run only under Triton\'s interpreter, '
              'TRITON_INTERPRET=1 set before import); `pip install triton`',
}

# Measured on an H200 (bf16; issue 12's baseline): Vim-T train step 512², b8, chunked vs mamba_ssm.
_GPU_FALLBACK_WARNING = (
    'selective_scan: no fast GPU backend (mamba_ssm\'s kernel or Triton) is available, so the pure-PyTorch '
    '`chunked` scan runs on the GPU: it trains Vim 37x slower (H200, Vim-T 512² b8: 2965 ms vs 79 ms a '
    'step). Fix: `pip install triton` (CUDA builds of torch ship it). Set MMVSSM_SCAN_BACKEND=chunked to '
    'choose it knowingly.')
_warned_gpu_fallback = False
# Device types on which ``auto`` falling back to ``chunked`` is announced (GPUs, where it is ~40x slower).
_ANNOUNCE_CHUNKED_ON = {'cuda'}


def _warn_gpu_fallback() -> None:
    global _warned_gpu_fallback
    if not _warned_gpu_fallback:
        _warned_gpu_fallback = True
        warnings.warn(_GPU_FALLBACK_WARNING, RuntimeWarning, stacklevel=4)
        logging.getLogger('mmvssm').warning(_GPU_FALLBACK_WARNING)


# The backend ``auto`` calls use, set by :class:`use_backend` (None: not set).
_selected_backend: Optional[str] = None


def _check_name(name: str, source: str) -> str:
    name = name.strip().lower()
    if name != 'auto' and name not in BACKENDS:
        raise ValueError(f'selective_scan: unknown backend {name!r} (from {source}); choose one of '
                         f"{('auto',) + BACKENDS}")
    return name


class use_backend:  # noqa: N801 (used like a function, as torch.no_grad)
    """Choose the backend of every ``backend='auto'`` scan call.

    ``use_backend('triton')`` sets it for the rest of the process; ``with use_backend('triton'): ...``
    sets it for the block and restores the previous choice after. ``use_backend('auto')`` clears it. It
    takes precedence over ``$MMVSSM_SCAN_BACKEND``; an explicit ``backend=`` argument takes precedence
    over both.
    """

    def __init__(self, name: str) -> None:
        global _selected_backend
        self.name = _check_name(name, 'use_backend()')
        self._previous = _selected_backend
        _selected_backend = None if self.name == 'auto' else self.name

    def __enter__(self) -> 'use_backend':
        return self

    def __exit__(self, *exc) -> None:
        global _selected_backend
        _selected_backend = self._previous


def _forced_backend() -> Optional[Tuple[str, str]]:
    """(name, where it was set) when use_backend or the environment variable chose a backend."""
    if _selected_backend is not None:
        return _selected_backend, 'use_backend()'
    forced = os.environ.get(ENV_BACKEND, '').strip().lower()
    if forced and forced != 'auto':
        return _check_name(forced, f'${ENV_BACKEND}'), f'${ENV_BACKEND}'
    return None


def _resolve_backend(backend: str, u: Tensor, A: Tensor) -> str:
    """Pick the backend for these inputs.

    ``auto`` takes the first of :data:`AUTO_ORDER` for ``u``'s device that is available and supports the
    inputs, unless :class:`use_backend` or ``$MMVSSM_SCAN_BACKEND`` names a backend. An explicitly
    requested (or forced) backend that cannot run is an error, never a silent fallback; ``chunked`` on a
    GPU is announced once.
    """
    source = 'the `backend` argument'
    backend = _check_name(backend, source)
    if backend == 'auto':
        forced = _forced_backend()
        if forced is not None:
            backend, source = forced
        else:
            for name in AUTO_ORDER.get(u.device.type, ('chunked', )):
                if _backend_available(name, u.device) and _unsupported_reason(name, u, A) is None:
                    if name == 'chunked' and u.device.type in _ANNOUNCE_CHUNKED_ON:
                        _warn_gpu_fallback()
                    return name
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
            'cuda': 'selective_scan_cuda', 'triton': 'selective_scan_triton'}[name]
    return getattr(module, impl)(*args)


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
    batch, k, dim, length = u.shape

    def fold(t):
        return None if t is None else t.reshape(batch, k * dim, length)

    y = selective_scan(fold(u), fold(delta), A.reshape(k * dim, -1), B, C,
                       None if D is None else D.reshape(k * dim),
                       fold(z), None if delta_bias is None else delta_bias.reshape(k * dim),
                       delta_softplus=delta_softplus, backend=backend)
    return y.view(batch, k, dim, length)


def reads_backward_in_place(backend: str, u: Tensor) -> bool:
    """Whether Vim's second direction is scanned backwards over the stored order for tensors like ``u``.

    True where the scan resolves to ``triton`` (its kernel walks the sequence from the end). Elsewhere the
    second direction is kept reversed, in the order it is scanned, between
    :func:`~mmvssm.ops.bidirectional_conv1d_silu` and :func:`bidirectional_scan`, as the official layer
    does: each layout moves the least data its backend allows.
    """
    return _resolve_backend(backend, u, u.new_empty(1, 1)) == 'triton'


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
    name = _resolve_backend(backend, u, A)
    # The conv chose the layout without A: a backend that fell back for these inputs (N) cannot use it.
    if name != 'triton' and reads_backward_in_place(backend, u):
        raise RuntimeError(f'bidirectional_scan: backend {name!r} cannot run these inputs (N = '
                           f'{A.shape[-1]}) in the layout the conv produced; pass backend="chunked" to both')
    if name == 'triton':
        return _backend_module(name).bidirectional_scan_triton(u, delta, A, B, C, D, z, delta_bias,
                                                               delta_softplus)
    zz = None if z is None else torch.stack([z, z.flip(-1)], dim=1)
    y = multi_direction_scan(u, delta, A, B, C, D, zz, delta_bias, delta_softplus=delta_softplus,
                             backend=name)
    return y[:, 0] + y[:, 1].flip(-1)
