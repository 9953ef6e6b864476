"""Safe checkpoint reading for torch >= 2.6 (``weights_only=True`` by default).

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; on recent torch that rejects its own
resume checkpoints (numpy arrays, ``HistoryBuffer``) and official checkpoints that store an
``argparse.Namespace``. Rather than turning the safety off, we keep ``weights_only=True`` and allow-list
the few plain-data classes those files really contain. A file that needs anything else is refused with a
message naming the classes and the explicit opt-in for that one file (``allow_unsafe=True`` or
``MMVSSM_ALLOW_UNSAFE_LOAD=/path/of/the/file.pth``), which should only be used for files from a trusted
source.
"""
import argparse
import collections
import contextlib
import os
import os.path as osp
import pickle
import tempfile
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import numpy as np
import torch

ENV_ALLOW_UNSAFE = 'MMVSSM_ALLOW_UNSAFE_LOAD'


def safe_load_globals() -> list:
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
        allow_unsafe: load with full pickle if the safe load fails. Default: only when the environment
            variable ``MMVSSM_ALLOW_UNSAFE_LOAD`` names this file (see :func:`env_trusts`). Only for
            files from a trusted source.

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is not a torch checkpoint, or needs classes outside the allow-list.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path!r}; check the path (or the '
                                f'`checkpoint=` of your init_cfg / the `--resume` argument)')
    try:
        with torch.serialization.safe_globals(safe_load_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' not in str(err):  # not a refused class: a broken or foreign file
            raise RuntimeError(f'{path!r} is not a readable torch checkpoint: {err}') from err
        if allow_unsafe or (allow_unsafe is None and env_trusts(path)):
            return torch.load(path, map_location=map_location, weights_only=False)
        raise RuntimeError(
            f'{path!r} holds Python objects that torch.load(weights_only=True) refuses ({err}). If the '
            f'file comes from a source you trust, load it with allow_unsafe=True or name it in the '
            f'environment: {ENV_ALLOW_UNSAFE}={osp.abspath(path)}') from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(f'{path!r} is not a readable torch checkpoint (truncated or another '
                           f'format?): {err}') from err


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
    return strip_prefix(state, 'module.', only_if_all=True)


def atomic_save(obj: Any, path: str, save_fn: Optional[Callable[[Any, Any], None]] = None) -> None:
    """Write ``obj`` next to ``path`` and rename it into place, so a kill never leaves a truncated file.

    ``save_fn(obj, file)`` writes the bytes (default: ``torch.save``, looked up at each call).
    """
    save_fn = save_fn or torch.save
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


# --------------------------------------------------------------------------------------------------
# One home for putting weights into a model
# --------------------------------------------------------------------------------------------------
# Every path by which weights enter a model that holds an mmvssm module ends in :func:`load_weights`:
# ``init_cfg=dict(type='Pretrained')`` and ``pretrained=`` of our backbones (:func:`load_pretrained`),
# and mmengine's ``load_state_dict`` (``load_from``, ``--resume``, ``mmengine.runner.load_checkpoint``,
# mmseg's/mmdet's own tools/test.py; see :func:`install_mmengine_loading`). It
#
# 1. strips a DistributedDataParallel ``module.`` prefix (:func:`strip_prefix`, the only prefix stripper),
# 2. converts official key layouts (:func:`convert_state_dict`) with the hooks the models define beside
#    themselves: an official classification file entering a whole classifier goes through its backbone's
#    ``convert_classifier_checkpoint``, and the keys under each submodule that has a
#    ``convert_checkpoint(local_state)`` method go through that method,
# 3. loads, and reports restored/expected tensors by name; restoring less than ``min_restored`` of the
#    expected tensors (or any tensor of another shape, unless ``allow_mismatch``) is an error.
# This floor knows no model: what each model's files look like lives in its own file.
DEFAULT_MIN_RESTORED = 0.9


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model: too few tensors restored, or tensors of another shape."""


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


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(module) or isinstance(module, BaseTTAModel):
        module = module.module
    return module


def convert_state_dict(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert ``state`` (keys relative to ``model``) from official layouts to the model's own.

    * ``model.backbone.convert_classifier_checkpoint(state)``, when the backbone has that hook and no key
      is already in the model's layout (no ``backbone.*`` key, none of the model's own names): an
      official classification file entering a whole classifier (e.g. ``load_from`` of a classifier
      config) becomes ``backbone.*``/``head.*`` keys.
    * ``module.convert_checkpoint(local_state)`` for each submodule that has the method (outermost first;
      the keys under a converted module are not converted again by its children), applied to the keys
      under that submodule's name, without that prefix.
    """
    state = dict(state)
    backbone = getattr(model, 'backbone', None)
    to_classifier = getattr(backbone, 'convert_classifier_checkpoint', None)
    own = model.state_dict()
    if (isinstance(backbone, torch.nn.Module) and callable(to_classifier)
            and not any(k.startswith('backbone.') or k in own for k in state)):
        state = to_classifier(state)
    converted_prefixes: list = []
    for name, module in model.named_modules():
        convert = getattr(module, 'convert_checkpoint', None)
        prefix = name + '.' if name else ''
        if not callable(convert) or any(prefix.startswith(p) for p in converted_prefixes):
            continue
        local = strip_prefix(state, prefix)
        if not local:
            continue
        converted_prefixes.append(prefix)
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        state.update({prefix + k: v for k, v in convert(local).items()})
    return state


def _names(keys: list, limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f' ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_weights(model: torch.nn.Module, state: Dict[str, torch.Tensor], source: str = 'state dict',
                 min_restored: float = DEFAULT_MIN_RESTORED, allow_mismatch: bool = False,
                 strict: bool = False, default_prefix: str = 'backbone.',
                 fresh: Sequence[str] = ()) -> Dict[str, list]:
    """Convert ``state`` to ``model``'s layout, load it, report and enforce how much was restored.

    Args:
        model: the module receiving the weights (model wrappers are unwrapped).
        state: the checkpoint's tensors, keys relative to ``model``.
        source: what to call the checkpoint in messages (its path).
        min_restored: fewer restored than this fraction of the model's tensors is an error.
        allow_mismatch: tensors whose shape differs from the model's are skipped (counted as not
            restored) instead of being an error; for fine-tuning with another number of classes.
        strict: any missing or unused tensor is an error (as ``torch``'s ``strict=True``).
        default_prefix: when no key of ``state`` names a tensor of ``model`` but some start with this
            prefix, the keys under it are used (a whole-model file loaded into its backbone or head).
        fresh: key prefixes of layers the checkpoint may lack (a dense backbone's additions to its
            ImageNet layout); when absent they keep their initialisation and are reported, not expected.

    Returns:
        dict with ``restored``, ``missing``, ``mismatched`` and ``unexpected`` key lists.

    Raises:
        WeightsMismatchError: the checkpoint does not fit (message names the tensors and the fix).
    """
    model = _unwrap(model)
    state = strip_prefix(state, 'module.', only_if_all=True)
    own = model.state_dict()
    if (default_prefix and not any(k in own for k in state)
            and not any(k.startswith(default_prefix) for k in own)
            and any(k.startswith(default_prefix) for k in state)):
        state = strip_prefix(state, default_prefix)
    state = convert_state_dict(model, state)
    expected = [k for k in own if not k.endswith('num_batches_tracked')]
    new_layers = [k for k in expected if k.startswith(tuple(fresh)) and k not in state]
    expected = [k for k in expected if k not in new_layers]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    model.load_state_dict(usable, strict=False)
    restored = [k for k in expected if k in usable]
    missing = [k for k in expected if k not in usable and k not in mismatched]
    name = type(model).__name__
    report = (f'{name}: restored {len(restored)}/{len(expected)} tensors from {source}'
              + (f'; missing: {_names(missing)}' if missing else '')
              + (f'; tensors of other shapes in the checkpoint: '
                 + _names([f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in mismatched], 5)
                 if mismatched else '')
              + (f'; not used: {_names(unexpected)}' if unexpected else '')
              + (f'; new layers, initialised fresh: {_names(new_layers)}' if new_layers else ''))
    from mmengine.logging import print_log
    print_log(report, logger='current')
    fraction = len(restored) / max(len(expected), 1)
    if mismatched and not allow_mismatch:
        raise WeightsMismatchError(
            f'{report}. The checkpoint was made for another architecture (arch, depth, widths or '
            f'number of classes differ): use the checkpoint of this config, or fix the config to the '
            f"checkpoint's architecture")
    if fraction < min_restored or (strict and (missing or unexpected or mismatched)):
        raise WeightsMismatchError(
            f'{report}. That is {fraction:.0%} of the model, below the required '
            f'{"100% (strict)" if strict else f"{min_restored:.0%}"}: is it a checkpoint of another model? '
            f'Load backbone-only (ImageNet) weights with model.backbone.init_cfg=dict(type='
            f"'Pretrained', checkpoint=PATH), not load_from")
    result = dict(model=name, source=source, restored=restored, expected=expected, missing=missing,
                  mismatched=mismatched, unexpected=unexpected, fresh=new_layers,
                  # torch's names, as load_state_dict returns them
                  missing_keys=missing + new_layers + mismatched, unexpected_keys=unexpected)
    for reports in _REPORTS:
        reports.append(result)
    return result


def load_pretrained(module: torch.nn.Module, path: str, prefix: Optional[str] = None,
                    default_prefix: str = 'backbone.',
                    min_restored: float = DEFAULT_MIN_RESTORED) -> Dict[str, list]:
    """Load a checkpoint file (official layout, mmvssm/mmpretrain/mmseg/mmdet) into one submodule.

    ``prefix`` selects the keys under it; by default ``default_prefix`` is selected when the file is a
    whole-model checkpoint (keys under ``default_prefix``, none of them named as in ``module``).
    The file is found, converted, loaded and reported as by :func:`load_weights`.
    """
    state = extract_state_dict(load_checkpoint_file(path))
    if prefix:
        state = strip_prefix(state, prefix)
        if not state:
            raise WeightsMismatchError(f'{path!r} has no tensors under the prefix {prefix!r}')
    # layers a dense backbone adds to its classification layout (its ``fresh_key_prefixes``): an ImageNet
    # file has none, so they start fresh and are reported apart from the expected tensors
    fresh = tuple(getattr(_unwrap(module), 'fresh_key_prefixes', ()))
    return load_weights(module, state, source=path, min_restored=min_restored,
                        default_prefix=default_prefix, fresh=fresh)


@contextlib.contextmanager
def weights_policy(min_restored: float = DEFAULT_MIN_RESTORED,
                   allow_mismatch: bool = True) -> Iterator[list]:
    """The requirement mmengine's loader enforces (see :func:`install_mmengine_loading`) in this block.

    ``tools/test.py`` uses ``weights_policy(1.0, allow_mismatch=False)``: a metric is only reported for
    a model whose every tensor came from the checkpoint. Yields a list that receives the report
    (:func:`load_weights`'s dict) of every load in the block.
    """
    previous = dict(_POLICY)
    reports: list = []
    _POLICY.update(min_restored=min_restored, allow_mismatch=allow_mismatch)
    _REPORTS.append(reports)
    try:
        yield reports
    finally:
        _REPORTS.remove(reports)
        _POLICY.clear()
        _POLICY.update(previous)


# Outside tools/test.py, ``load_from`` may fine-tune with other heads: shape changes are skipped.
_POLICY: Dict[str, Any] = dict(min_restored=DEFAULT_MIN_RESTORED, allow_mismatch=True)
_REPORTS: list = []


def _holds_mmvssm_module(model: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith('mmvssm.') for m in _unwrap(model).modules())


def install_mmengine_loading() -> None:
    """Route mmengine's ``load_state_dict`` through :func:`load_weights` for models with mmvssm modules.

    mmengine's ``load_checkpoint``, ``PretrainedInit`` and the Runner's ``load_from``/``resume`` (and so
    mmseg's/mmdet's own tools) all call ``mmengine.runner.checkpoint.load_state_dict``; models without an
    mmvssm module keep mmengine's behaviour. Called when :mod:`mmvssm` is imported; idempotent.
    """
    import mmengine.runner.checkpoint as mm_checkpoint
    if getattr(mm_checkpoint.load_state_dict, '_mmvssm', False):
        return
    original = mm_checkpoint.load_state_dict

    def load_state_dict(module, state_dict, strict=False, logger=None):
        if not _holds_mmvssm_module(module):
            return original(module, state_dict, strict=strict, logger=logger)
        # official files keep their weights under `model`/`model_ema`, which mmengine does not unpack
        load_weights(module, extract_state_dict(dict(state_dict)), source='the checkpoint', strict=strict,
                     **_POLICY)

    load_state_dict._mmvssm = True
    load_state_dict.__doc__ = original.__doc__
    mm_checkpoint.load_state_dict = load_state_dict
    import mmengine.runner as mm_runner
    if getattr(mm_runner, 'load_state_dict', None) is original:
        mm_runner.load_state_dict = load_state_dict
