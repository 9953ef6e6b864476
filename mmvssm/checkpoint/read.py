"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` with a plain-data allow-list.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses the plain-data classes that
mmengine's own checkpoints (numpy arrays and scalars, ``HistoryBuffer``) and the official ones
(``argparse.Namespace``, a yacs config) contain. Rather than turning the safety off, the allow-list of
:func:`safe_load_globals` is registered with ``torch.serialization.add_safe_globals`` when
:mod:`mmvssm.checkpoint` is imported. That registration is process-wide (torch keeps one list): every
weights-only ``torch.load`` of the process, mmengine's included, accepts these classes, none of which
can run code on load; anything else is still refused.

A file that needs anything else is refused with a message naming the classes and the opt-in for that one
file (``allow_unsafe=True`` or ``MMVSSM_ALLOW_UNSAFE_LOAD=/path/of/the/file.pth``), only for files from a
trusted source.
"""
import argparse
import collections
import os
import os.path as osp
import pickle
from typing import Any, Dict, Optional

import numpy as np
import torch

ENV_ALLOW_UNSAFE = 'MMVSSM_ALLOW_UNSAFE_LOAD'


class UnsafeCheckpointError(RuntimeError, pickle.UnpicklingError):
    """A checkpoint holds Python objects outside the allow-list (an unpickling error, as torch's own)."""


def safe_load_globals() -> list:
    """Plain-data classes found in mmengine and official checkpoints; none can run code on load."""
    # Official EfficientVMamba/EfficientViM files pickle their yacs training config (a dict subclass);
    # a (class, name) pair makes the unpickler build a plain OrderedDict in its place, so the file loads
    # without importing, or trusting, yacs.
    allowed = [argparse.Namespace, collections.OrderedDict, collections.defaultdict, np.ndarray, np.dtype,
               (collections.OrderedDict, 'yacs.config.CfgNode'),
               # protocol 2 pickles empty bytes as a call of `bytes` (the data of an empty numpy array:
               # an empty HistoryBuffer, np.array([]) in meta)
               bytes]
    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    allowed += [_reconstruct, scalar]
    allowed += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool', 'uint8')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:  # pragma: no cover
        return allowed

    # HistoryBuffer pickles its statistics methods as `getattr(HistoryBuffer, 'mean')`. A general
    # `getattr` would let a file reach any attribute of any allowed object, so the allowed one resolves
    # only HistoryBuffer's own methods.
    def history_buffer_getattr(obj: Any, name: str) -> Any:
        if obj is not HistoryBuffer or not callable(getattr(HistoryBuffer, name, None)):
            raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}) in a checkpoint')
        return getattr(HistoryBuffer, name)

    allowed += [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr')]
    return allowed


def register_safe_globals() -> None:
    """Add :func:`safe_load_globals` to torch's process-wide weights-only allow-list (idempotent)."""
    registered = {g if not isinstance(g, tuple) else g[1] for g in torch.serialization.get_safe_globals()}
    torch.serialization.add_safe_globals(
        [g for g in safe_load_globals() if (g if not isinstance(g, tuple) else g[1]) not in registered])


def env_trusts(path: str) -> bool:
    """Whether ``MMVSSM_ALLOW_UNSAFE_LOAD`` names ``path`` (a list of files separated by ``os.pathsep``).

    The opt-in covers the named files only, never every load of the process; the former ``=1`` is
    refused with the fix.
    """
    value = os.environ.get(ENV_ALLOW_UNSAFE, '').strip()
    if not value or value == '0':
        return False
    if value == '1':
        raise RuntimeError(f'{ENV_ALLOW_UNSAFE}=1 would trust every file this process loads; name the '
                           f'trusted checkpoint instead: {ENV_ALLOW_UNSAFE}={osp.abspath(path)}')
    trusted = {osp.realpath(osp.expanduser(p)) for p in value.split(os.pathsep) if p}
    return osp.realpath(path) in trusted


def load_checkpoint_file(path: str, map_location: Any = 'cpu', allow_unsafe: Optional[bool] = None) -> Any:
    """``torch.load`` a local checkpoint with ``weights_only=True`` (and the registered allow-list).

    Every scheme of mmengine's ``CheckpointLoader`` ends here (:mod:`mmvssm.checkpoint.schemes`; a URL
    through its downloaded file).

    Args:
        path: local file path.
        map_location: as for ``torch.load``.
        allow_unsafe: load with full pickle if the safe load fails. Default: only when the environment
            variable ``MMVSSM_ALLOW_UNSAFE_LOAD`` names this file (see :func:`env_trusts`). Only for
            files from a trusted source.

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is not a torch checkpoint; :class:`UnsafeCheckpointError` (also a
            ``pickle.UnpicklingError``) when it needs classes outside the allow-list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}; check the path (or the '
                                f'`checkpoint=` of your init_cfg / the `--resume` argument)')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'unsupported global' not in str(err).lower():  # not a refused class: a broken or foreign file
            raise RuntimeError(f'{path!r} is not a readable torch checkpoint: {err}') from err
        if allow_unsafe or (allow_unsafe is None and env_trusts(path)):
            return torch.load(path, map_location=map_location, weights_only=False)
        raise UnsafeCheckpointError(
            f'{path!r} holds Python objects that torch.load(weights_only=True) refuses ({err}). If the '
            f'file comes from a source you trust, load it with allow_unsafe=True or name it in the '
            f'environment: {ENV_ALLOW_UNSAFE}={osp.abspath(path)}') from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(f'{path!r} is not a readable torch checkpoint (truncated or another '
                           f'format?): {err}') from err


def strip_prefix(state: Dict[str, torch.Tensor], prefix: str,
                 only_if_all: bool = False) -> Dict[str, torch.Tensor]:
    """The entries under ``prefix``, without it.

    ``only_if_all``: strip the prefix as long as every key has it (``module.module.`` of an EMA copy of
    a DistributedDataParallel model), else leave ``state`` unchanged.
    """
    if only_if_all:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
        return state
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def extract_state_dict(checkpoint: Any, prefer: str = 'model') -> Dict[str, torch.Tensor]:
    """The model weights inside a checkpoint dict, whatever container the producer used.

    Looks for ``state_dict`` (mmengine), ``model``/``model_ema`` (DeiT-style trainers, ``prefer`` picks
    which) or treats the dict itself as the state dict; strips DistributedDataParallel ``module.``
    prefixes (the only place they are stripped).
    """
    if not isinstance(checkpoint, dict):
        raise RuntimeError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', prefer, 'model', 'model_ema', 'module'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            checkpoint = checkpoint[key]
            break
    state = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise RuntimeError('the checkpoint holds no tensors: is it a model checkpoint?')
    return strip_prefix(state, 'module.', only_if_all=True)
