"""Putting weights into a model: torch's ``load_state_dict`` hooks convert, check and report.

Every loader ends in ``Module.load_state_dict`` or mmengine's ``load_state_dict``, and both run the
module's ``load_state_dict`` pre- and post-hooks. :func:`attach_weight_hooks` gives a module the pair
below; each module with an official layout attaches it to itself (``SSMBackbone``, EfficientViM's FPN
and fusion head), and a torch module-registration hook (:func:`_propagate`) attaches it to every module
that receives such a module as a child, so whichever module a load starts from has it. Only the module
the load starts from acts (``prefix == ''``). Its pre-hook

1. finds the weights inside the container (official ``model``/``model_ema``, mmengine ``state_dict``) and
   strips DistributedDataParallel ``module.`` prefixes (:func:`~mmvssm.checkpoint.extract_state_dict`),
2. takes the ``default_prefix`` part of a whole-model file loaded into a backbone or head,
3. converts official layouts with the functions the models define beside themselves: a whole official
   classification file through the backbone's ``convert_classifier_checkpoint``, and the keys under each
   submodule with a ``convert_checkpoint(local_state)`` method through it (outermost first),
4. refuses non-finite tensors (when the policy says so) and sets tensors of another shape aside;

its post-hook (torch hands it the missing and unexpected keys) logs ``restored N/M tensors from FILE``
and raises :class:`WeightsMismatchError` when too few were restored or shapes differ (:class:`LoadPolicy`).

The policy is per model: :func:`load_policy` sets it for a block (``load_pretrained``; the Runner of
:mod:`mmvssm.checkpoint.runner` from its ``load_policy`` config field). This module knows no model.
"""
import contextlib
import dataclasses
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

from .read import extract_state_dict, load_checkpoint_file, strip_prefix

DEFAULT_MIN_RESTORED = 0.9
_HOOKED = '_mmvssm_weight_hooks'
_POLICY_ATTR = '_mmvssm_load_policy'
_PENDING = '_mmvssm_pending_load'
_REPORT = '_mmvssm_load_report'


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model: too few tensors restored, or tensors of another shape."""


class CheckpointRefused(WeightsMismatchError):
    """A checkpoint whose tensors cannot be trusted: non-finite values, or changed since it was written."""


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """What a load must achieve, set per model (:func:`load_policy`) or per run (the Runner's field).

    Attributes:
        min_restored: fewer restored than this fraction of the model's tensors is an error.
        allow_mismatch: tensors whose shape differs from the model's are skipped (counted as not
            restored) instead of being an error; for fine-tuning with another number of classes.
        strict: any missing or unused tensor is an error (as ``torch``'s ``strict=True``).
        finite: a NaN/Inf value in a floating-point tensor of the checkpoint is an error.
        own_unused: an unused tensor under one of the model's own module names (a checkpoint of a
            deeper model of the same family) is an error.
        source: what to call the checkpoint in messages (its path).
        default_prefix: when no key names a tensor of the model but some start with this prefix, the
            keys under it are used (a whole-model file loaded into its backbone or head).
        fresh: key prefixes of layers the checkpoint may lack (a dense backbone's additions to its
            ImageNet layout); when absent they keep their initialisation and are reported, not expected.
    """

    min_restored: float = DEFAULT_MIN_RESTORED
    allow_mismatch: bool = True
    strict: bool = False
    finite: bool = False
    own_unused: bool = False
    source: str = 'the checkpoint'
    default_prefix: str = 'backbone.'
    fresh: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.min_restored <= 1:
            raise ValueError(f'load_policy.min_restored={self.min_restored}: give a fraction in [0, 1]')


def policy_of(module: nn.Module) -> LoadPolicy:
    """The policy loads into ``module`` follow (the default: :class:`LoadPolicy`'s defaults)."""
    return getattr(module, _POLICY_ATTR, None) or LoadPolicy()


def set_load_policy(module: nn.Module, **fields: Any) -> LoadPolicy:
    """Make every later load into ``module`` follow ``LoadPolicy(**fields)``; returns it."""
    policy = LoadPolicy(**{**_fields(policy_of(module)), **fields}) if fields else LoadPolicy()
    object.__setattr__(module, _POLICY_ATTR, policy)
    return policy


@contextlib.contextmanager
def load_policy(module: nn.Module, **fields: Any) -> Iterator[LoadPolicy]:
    """Loads into ``module`` inside the block follow its policy with ``fields`` replaced."""
    previous = getattr(module, _POLICY_ATTR, None)
    policy = LoadPolicy(**{**_fields(policy_of(module)), **fields})
    object.__setattr__(module, _POLICY_ATTR, policy)
    try:
        yield policy
    finally:
        object.__setattr__(module, _POLICY_ATTR, previous)


def _fields(policy: LoadPolicy) -> Dict[str, Any]:
    return {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy)}


def last_load_report(module: nn.Module) -> Optional[dict]:
    """The report of the last load that started from ``module`` (``restored``, ``expected``, ``missing``,
    ``mismatched``, ``unexpected``, ``fresh`` key lists), or None."""
    return getattr(module, _REPORT, None)


def name_list(keys: Sequence[str], limit: int = 12) -> str:
    """``keys`` for a message: the first ``limit``, then how many more."""
    keys = list(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f' ... ({len(keys) - limit} more)' if len(keys) > limit else '')


# ---------------------------------------------------------------------------------------- conversion
def convert_state_dict(model: nn.Module, state: Dict[str, torch.Tensor],
                       own: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Convert ``state`` (keys relative to ``model``) from official layouts to the model's own.

    * ``model.backbone.convert_classifier_checkpoint(state)``, when the backbone has that hook and no key
      is already in the model's layout (no ``backbone.*`` key, none of the model's own names): an
      official classification file entering a whole classifier becomes ``backbone.*``/``head.*`` keys.
    * ``module.convert_checkpoint(local_state)`` for each submodule that has the method (outermost first;
      the keys under a converted module are not converted again by its children), applied to the keys
      under that submodule's name, without that prefix.
    """
    own = model.state_dict() if own is None else own
    backbone = getattr(model, 'backbone', None)
    to_classifier = getattr(backbone, 'convert_classifier_checkpoint', None)
    if (isinstance(backbone, nn.Module) and callable(to_classifier)
            and not any(k.startswith('backbone.') or k in own for k in state)):
        state = to_classifier(state)
    converted_prefixes: List[str] = []
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


def _non_finite(state: Dict[str, torch.Tensor]) -> List[str]:
    return [k for k, v in state.items()
            if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]


def _under_own_module(key: str, modules: set) -> bool:
    """Whether ``key`` lies under a named (non-root) module of the model: ``backbone.layers.6.x`` when
    the model has ``backbone.layers``."""
    parts = key.split('.')
    return any('.'.join(parts[:i]) in modules for i in range(1, len(parts)))


# ---------------------------------------------------------------------------------------- the hooks
def _pre_hook(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Unpack, strip, convert and check the checkpoint in place, before torch copies any tensor."""
    if prefix:  # a submodule of the module the load started from: that one's hook did the work
        return
    policy = policy_of(module)
    own = module.state_dict()
    state = extract_state_dict(dict(state_dict))
    if (policy.default_prefix and not any(k in own for k in state)
            and not any(k.startswith(policy.default_prefix) for k in own)
            and any(k.startswith(policy.default_prefix) for k in state)):
        state = strip_prefix(state, policy.default_prefix)
    state = convert_state_dict(module, state, own)
    if policy.finite:
        bad = _non_finite(state)
        if bad:
            raise CheckpointRefused(f'{policy.source}: tensors with NaN or Inf values: {name_list(bad)}. '
                                    f'The weights are broken (a diverged run?); use an earlier checkpoint')
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in mismatched}
    state_dict.clear()  # torch loads from this dict: the converted tensors, without the misfits
    state_dict.update({k: v for k, v in state.items() if k not in shapes})
    object.__setattr__(module, _PENDING, dict(keys=list(state), shapes=shapes))


def _post_hook(module: nn.Module, incompatible: Any) -> None:
    """Report restored/expected tensors and enforce the policy of the module the load started from."""
    pending = module.__dict__.pop(_PENDING, None)
    if pending is None:
        return
    policy = policy_of(module)
    own = module.state_dict()
    keys, shapes = pending['keys'], pending['shapes']
    in_file = set(keys)
    expected = [k for k in own if not k.endswith('num_batches_tracked')]
    fresh = [k for k in expected if k.startswith(tuple(policy.fresh)) and k not in in_file]
    expected = [k for k in expected if k not in fresh]
    restored = [k for k in expected if k in in_file and k not in shapes]
    missing = [k for k in expected if k not in in_file]
    unexpected = [k for k in keys if k not in own]
    mismatched = list(shapes)
    report = (f'{type(module).__name__}: restored {len(restored)}/{len(expected)} tensors from '
              f'{policy.source}'
              + (f'; missing: {name_list(missing)}' if missing else '')
              + ('; tensors of other shapes in the checkpoint: '
                 + name_list([f'{k} {a} vs {b}' for k, (a, b) in shapes.items()], 5) if shapes else '')
              + (f'; not used: {name_list(unexpected)}' if unexpected else '')
              + (f'; new layers, initialised fresh: {name_list(fresh)}' if fresh else ''))
    result = dict(model=type(module).__name__, source=policy.source, restored=restored, expected=expected,
                  missing=missing, mismatched=mismatched, unexpected=unexpected, fresh=fresh,
                  # torch's names, as load_state_dict returns them
                  missing_keys=missing + fresh + mismatched, unexpected_keys=unexpected)
    object.__setattr__(module, _REPORT, result)
    print_log(report, logger='current')
    _enforce(module, policy, result, report)


def _enforce(module: nn.Module, policy: LoadPolicy, result: dict, report: str) -> None:
    fraction = len(result['restored']) / max(len(result['expected']), 1)
    if result['mismatched'] and not policy.allow_mismatch:
        raise WeightsMismatchError(
            f'{report}. The checkpoint was made for another architecture (arch, depth, widths or '
            f'number of classes differ): use the checkpoint of this config, or fix the config to the '
            f"checkpoint's architecture")
    if policy.own_unused:
        modules = {name for name, _ in module.named_modules() if name}
        foreign = [k for k in result['unexpected'] if _under_own_module(k, modules)]
        if foreign:
            raise WeightsMismatchError(
                f'{report}. {policy.source} holds tensors under this model\'s module names that it does '
                f'not have ({name_list(foreign)}): a checkpoint of another arch of the same family '
                f'(deeper or wider); use the checkpoint of this config, or fix the config to its arch')
    if fraction < policy.min_restored or (
            policy.strict and (result['missing'] or result['unexpected'] or result['mismatched'])):
        raise WeightsMismatchError(
            f'{report}. That is {fraction:.0%} of the model, below the required '
            f'{"100% (strict)" if policy.strict else f"{policy.min_restored:.0%}"}: is it a '
            f'checkpoint of another model? Load backbone-only (ImageNet) weights with '
            f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH), not load_from")


def attach_weight_hooks(module: nn.Module) -> nn.Module:
    """Give ``module`` the conversion/check hooks (idempotent); returns it."""
    if not module.__dict__.get(_HOOKED, False):
        module.register_load_state_dict_pre_hook(_pre_hook)
        module.register_load_state_dict_post_hook(_post_hook)
        object.__setattr__(module, _HOOKED, True)
    return module


def _propagate(parent: nn.Module, name: str, child: Optional[nn.Module]) -> None:
    """torch's module-registration hook: a module receiving a hooked child gets the hooks too, so a load
    starting from any ancestor of an mmvssm module converts and checks (``name`` unused)."""
    if child is not None and child.__dict__.get(_HOOKED, False):
        attach_weight_hooks(parent)


nn.modules.module.register_module_module_registration_hook(_propagate)


# ---------------------------------------------------------------------------------------- loaders
def load_weights(model: nn.Module, state: Dict[str, torch.Tensor], **policy: Any) -> dict:
    """``model.load_state_dict(state)`` under ``policy`` (fields of :class:`LoadPolicy`); the report."""
    attach_weight_hooks(model)
    with load_policy(model, **policy):
        model.load_state_dict(state, strict=False)
    return last_load_report(model)


def load_pretrained(module: nn.Module, path: str, prefix: Optional[str] = None,
                    default_prefix: str = 'backbone.',
                    min_restored: float = DEFAULT_MIN_RESTORED) -> dict:
    """Load a checkpoint file (official layout, mmvssm/mmpretrain/mmseg/mmdet) into one submodule.

    ``prefix`` selects the keys under it; by default ``default_prefix`` is selected when the file is a
    whole-model checkpoint (keys under ``default_prefix``, none of them named as in ``module``). Tensors of
    another shape are an error; layers a dense backbone adds to its classification layout (its
    ``fresh_key_prefixes``) start fresh and are reported apart from the expected tensors.
    """
    state = extract_state_dict(load_checkpoint_file(path))
    if prefix:
        state = strip_prefix(state, prefix)
        if not state:
            raise WeightsMismatchError(f'{path!r} has no tensors under the prefix {prefix!r}')
    return load_weights(module, state, source=path, min_restored=min_restored, allow_mismatch=False,
                        default_prefix=default_prefix,
                        fresh=tuple(getattr(module, 'fresh_key_prefixes', ())))
