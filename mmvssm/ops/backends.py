"""The selective-scan backends, registered in one place, and how a call picks one.

:data:`REGISTRY` maps each name to its :class:`~mmvssm.ops.scan_backend.ScanBackend` object; adding a backend
is one line in the tuple below plus its own module. :func:`resolve` picks the backend of a call: an explicit
``backend=`` argument, else :class:`use_backend`, else ``$MMVSSM_SCAN_BACKEND``, else ``auto`` (the first
available backend of the tensors' device by each backend's ``auto_rank`` that supports the inputs). A
backend that was asked for and cannot run is an error naming the fix, never a silent fallback; ``auto``
falling back to a much slower backend (``chunked`` on a GPU) is announced once.
"""
import logging
import os
import warnings
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .chunked_scan import CHUNKED
from .cpu_backend import CPU
from .cuda_backend import CUDA
from .reference_scan import REFERENCE
from .scan_backend import ScanBackend
from .triton_backend import TRITON

#: Every backend by name, in the order :func:`available_backends` lists them.
REGISTRY: Dict[str, ScanBackend] = {b.name: b for b in (REFERENCE, CHUNKED, CPU, CUDA, TRITON)}
BACKENDS: Tuple[str, ...] = tuple(REGISTRY)
ENV_BACKEND = 'MMVSSM_SCAN_BACKEND'

_log = logging.getLogger('mmvssm')
_warned_slow: set = set()
# The backend ``auto`` calls use, set by :class:`use_backend` (None: not set).
_selected_backend: Optional[str] = None


def check_name(name: str, source: str) -> str:
    """``name`` normalised ('auto' or a registered backend); ValueError naming ``source`` otherwise."""
    name = name.strip().lower()
    if name != 'auto' and name not in REGISTRY:
        raise ValueError(f'selective_scan: unknown backend {name!r} (from {source}); choose one of '
                         f"{('auto',) + BACKENDS}")
    return name


def get(name: str) -> ScanBackend:
    """The backend object registered as ``name``."""
    return REGISTRY[check_name(name, 'the `backend` argument')]


def available(name: str, device: Optional[torch.device] = None) -> bool:
    """Whether backend ``name`` can run tensors on ``device``."""
    return REGISTRY[name].is_available(device)


def auto_order(device_type: str) -> Tuple[str, ...]:
    """The backends ``auto`` tries for ``device_type``, fastest first."""
    ranked = [(b.auto_rank.get(device_type, b.auto_rank.get('*')), b.name) for b in REGISTRY.values()]
    return tuple(name for rank, name in sorted(r for r in ranked if r[0] is not None))


def available_backends(device: Union[str, torch.device, None] = None) -> Tuple[str, ...]:
    """Names of the backends that can run on ``device`` (any device when None)."""
    dev = torch.device(device) if device is not None else None
    return tuple(name for name in BACKENDS if available(name, dev))


class use_backend:  # noqa: N801 (used like a function, as torch.no_grad)
    """Choose the backend of every ``backend='auto'`` scan call.

    ``use_backend('triton')`` sets it for the rest of the process; ``with use_backend('triton'): ...``
    sets it for the block and restores the previous choice after. ``use_backend('auto')`` clears it. It
    takes precedence over ``$MMVSSM_SCAN_BACKEND``; an explicit ``backend=`` argument takes precedence
    over both.
    """

    def __init__(self, name: str) -> None:
        global _selected_backend
        self.name = check_name(name, 'use_backend()')
        self._previous = _selected_backend
        _selected_backend = None if self.name == 'auto' else self.name

    def __enter__(self) -> 'use_backend':
        return self

    def __exit__(self, *exc) -> None:
        global _selected_backend
        _selected_backend = self._previous


def forced_backend() -> Optional[Tuple[str, str]]:
    """(name, where it was set) when use_backend or the environment variable chose a backend."""
    if _selected_backend is not None:
        return _selected_backend, 'use_backend()'
    forced = os.environ.get(ENV_BACKEND, '').strip().lower()
    if forced and forced != 'auto':
        return check_name(forced, f'${ENV_BACKEND}'), f'${ENV_BACKEND}'
    return None


def requested(backend: str) -> str:
    """The name a call with ``backend`` asks for: the argument, else the forced one, else 'auto'. Graph
    captures record it, so an exported program resolves 'auto' where it runs."""
    backend = check_name(backend, 'the `backend` argument')
    if backend == 'auto':
        forced = forced_backend()
        return forced[0] if forced is not None else 'auto'
    return backend


def auto_backend(device: Union[str, torch.device]) -> str:
    """The backend ``auto`` uses for tensors on ``device`` (before per-input limits such as N <= 256),
    after ``use_backend`` and ``$MMVSSM_SCAN_BACKEND``."""
    dev = torch.device(device)
    forced = forced_backend()
    if forced is not None:
        return forced[0]
    return next(name for name in auto_order(dev.type) if available(name, dev))


def backend_for(backend: str, device: Union[str, torch.device]) -> str:
    """The backend a scan call with ``backend`` uses on ``device`` (before per-input limits); raises
    ValueError for an unknown name."""
    backend = check_name(backend, 'the `backend` argument')
    return auto_backend(device) if backend == 'auto' else backend


def backend_plan(backend: str = 'auto') -> Dict[str, str]:
    """The backend that scans with ``backend`` will use for each device type present, e.g.
    ``{'cpu': 'cpu', 'cuda': 'triton'}``; raises ValueError for an unknown name."""
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    return {dev: backend_for(backend, dev) for dev in devices}


def _announce_slow(chosen: ScanBackend, device_type: str) -> None:
    """Warn once per (backend, device type) that ``auto`` fell back to a much slower backend."""
    message = chosen.slow_on.get(device_type)
    if message is not None and (chosen.name, device_type) not in _warned_slow:
        _warned_slow.add((chosen.name, device_type))
        warnings.warn(message, RuntimeWarning, stacklevel=5)
        _log.warning(message)


def resolve(backend: str, u: Tensor, A: Tensor) -> ScanBackend:
    """The backend for these inputs (see the module docstring)."""
    source = 'the `backend` argument'
    name = check_name(backend, source)
    if name == 'auto':
        forced = forced_backend()
        if forced is not None:
            name, source = forced
        else:
            for candidate in auto_order(u.device.type):
                chosen = REGISTRY[candidate]
                if chosen.is_available(u.device) and chosen.unsupported_reason(u, A) is None:
                    _announce_slow(chosen, u.device.type)
                    return chosen
    chosen = REGISTRY[name]
    why_not = chosen.unavailable_reason(u.device)
    if why_not is not None:
        raise RuntimeError(f'selective_scan: backend {name!r} was requested ({source}) but is {why_not}')
    reason = chosen.unsupported_reason(u, A)
    if reason is not None:
        raise RuntimeError(f'selective_scan: backend {name!r} was requested ({source}) but cannot '
                           f'run these inputs: {reason}; use backend="chunked" instead')
    return chosen
