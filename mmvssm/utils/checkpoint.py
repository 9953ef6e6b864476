"""Safe checkpoint reading for torch >= 2.6 (``weights_only=True`` by default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; on recent torch that rejects its own
resume checkpoints (numpy arrays, ``HistoryBuffer``) and official checkpoints that store an
``argparse.Namespace``. Rather than turning the safety off, we keep ``weights_only=True`` and allow-list
the few plain-data classes those files really contain. A file that needs anything else is refused with a
message naming the classes and the explicit opt-in (``allow_unsafe=True`` or
``MMVSSM_ALLOW_UNSAFE_LOAD=1``), which should only be used for files from a trusted source.
"""
import argparse
import collections
import contextlib
import os
import os.path as osp
import pickle
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch

ENV_ALLOW_UNSAFE = 'MMVSSM_ALLOW_UNSAFE_LOAD'


def _safe_globals() -> list:
    """Plain-data classes found in mmengine and official checkpoints; none can run code on load."""
    # Official EfficientVMamba/EfficientViM files pickle their yacs training config (a dict subclass);
    # a (class, name) pair makes the unpickler build a plain OrderedDict in its place, so the file loads
    # without importing, or trusting, yacs.
    allowed = [argparse.Namespace, collections.OrderedDict, collections.defaultdict, np.ndarray, np.dtype,
               (collections.OrderedDict, 'yacs.config.CfgNode')]
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


def load_checkpoint_file(path: str, map_location: Any = 'cpu', allow_unsafe: Optional[bool] = None) -> Any:
    """``torch.load`` a checkpoint with ``weights_only=True`` and an allow-list of plain-data classes.

    Args:
        path: local file path.
        map_location: as for ``torch.load``.
        allow_unsafe: load with full pickle if the safe load fails. Defaults to the environment variable
            ``MMVSSM_ALLOW_UNSAFE_LOAD=1``. Only for files from a trusted source.

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is not a torch checkpoint, or needs classes outside the allow-list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}; check the path (or the '
                                f'`checkpoint=` of your init_cfg / the `--resume` argument)')
    if allow_unsafe is None:
        allow_unsafe = os.environ.get(ENV_ALLOW_UNSAFE, '0') == '1'
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' not in str(err):  # not a refused class: a broken or foreign file
            raise RuntimeError(f'{path!r} is not a readable torch checkpoint: {err}') from err
        if allow_unsafe:
            return torch.load(path, map_location=map_location, weights_only=False)
        raise RuntimeError(
            f'{path!r} holds Python objects that torch.load(weights_only=True) refuses ({err}). If the '
            f'file comes from a source you trust, load it with allow_unsafe=True or set '
            f'{ENV_ALLOW_UNSAFE}=1.') from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(f'{path!r} is not a readable torch checkpoint (truncated or another '
                           f'format?): {err}') from err


def pretrained_init_cfg(init_cfg: Any, owner: str) -> Optional[dict]:
    """``init_cfg`` when it is ``dict(type='Pretrained', checkpoint=PATH, ...)``, else None.

    For modules that load pretrained weights themselves (through :func:`load_checkpoint_file`) instead of
    mmengine's ``PretrainedInit``; a Pretrained config without ``checkpoint`` is an error naming ``owner``.
    """
    if not (isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
        return None
    if 'checkpoint' not in init_cfg:
        raise ValueError(f"{owner}: init_cfg type 'Pretrained' needs `checkpoint=PATH`, got {init_cfg}")
    return init_cfg


def extract_state_dict(checkpoint: Any, prefer: str = 'model') -> Dict[str, torch.Tensor]:
    """The model weights inside a checkpoint dict, whatever container the producer used.

    Looks for ``state_dict`` (mmengine), ``model``/``model_ema`` (DeiT-style trainers, ``prefer`` picks
    which) or treats the dict itself as the state dict; strips a DistributedDataParallel ``module.`` prefix.
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
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def atomic_save(obj: Any, path: str, save_fn: Callable[[Any, Any], None] = torch.save) -> None:
    """Write ``obj`` next to ``path`` and rename it into place, so a kill never leaves a truncated file."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
        # mkstemp creates 0600 files: give the result the mode a plain open() would (umask applies)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, 'wb') as f:
            save_fn(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def safe_mmengine_checkpoint_loading() -> Iterator[None]:
    """Make mmengine read local checkpoints through :func:`load_checkpoint_file` inside this block.

    Used by ``tools/train.py``/``tools/test.py`` so ``--resume``/``load_from`` work on torch >= 2.6
    without disabling ``weights_only`` for anything else in the process.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    previous = CheckpointLoader._schemes.get('')

    def load_local(filename, map_location=None):
        return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)

    CheckpointLoader._schemes[''] = load_local
    try:
        yield
    finally:
        if previous is not None:
            CheckpointLoader._schemes[''] = previous
