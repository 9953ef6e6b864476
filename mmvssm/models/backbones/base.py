"""The backbone contract: what every mmvssm backbone accepts and guarantees (:class:`SSMBackbone`)."""
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmvssm.ops import backend_plan
from mmvssm.checkpoint import DEFAULT_MIN_RESTORED, attach_weight_hooks, load_pretrained
from ..layers.patch_embed import check_images  # noqa: F401  (re-exported: the backbones' input check)
from ..pretrained import PretrainedInit


class SSMBackbone(PretrainedInit, BaseModule):
    """Base class of the mmvssm backbones, and the contract all of them keep.

    A backbone is a sequence of *stages* after a stem. For the staged models (EfficientVMamba,
    EfficientViM) a stage is a resolution level; for the plain Vim a stage is one layer. The contract:

    * ``arch``: a name from the class's ``arch_zoo`` table (case-insensitive) or a dict with the same keys
      (plus the model's documented optional keys, ``arch_optional``). Anything else is a ValueError naming
      the choices (:meth:`_parse_arch`).
    * ``out_indices``: which stages' outputs ``forward`` returns, in that order. An int or a sequence of
      ints; negative entries count from the end and are normalised (-1 -> num_stages - 1); after that
      they must be in ``[0, num_stages)``, strictly increasing (sorted, no repeats) and non-empty, else a
      ValueError naming the valid range (:meth:`_parse_out_indices`). ``self.out_indices`` holds the
      normalised tuple.
    * ``frozen_stages``: -1 freezes nothing; 0 the stem (patch embedding, and Vim's position embedding
      and class token); k > 0 the stem and stages 0..k-1 with what belongs to them (output norms,
      downsampling). Frozen parameters get ``requires_grad=False`` at construction and frozen modules stay
      in eval mode through every ``train()``. Beyond ``num_stages`` is a ValueError.
    * ``norm_eval``: every BatchNorm stays in eval mode (frozen running statistics) while training.
    * ``with_cp``: activation checkpointing per block, one rule for all
      (:func:`mmvssm.models.layers.run_block`): on whenever autograd records, in train or eval mode.
    * weights come in only through ``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix=None)``;
      ``pretrained=PATH`` (what mmseg's segmentors pass to their backbone) is shorthand for it, and giving
      both is a ValueError. The file is read safely (``weights_only=True``), the weights are found inside
      whatever container holds them (official ``model``/``model_ema``, mmengine ``state_dict``,
      ``backbone.`` prefixes of whole-model checkpoints), converted by :meth:`convert_checkpoint` and loaded
      through :func:`mmvssm.checkpoint.load_pretrained` with a restored/expected report; restoring too
      little, or tensors of other shapes, is an error. Any other load (``load_from``, mmengine's
      ``load_checkpoint``, ``model.load_state_dict``) converts and checks the same way, through the
      ``load_state_dict`` hooks every backbone attaches (:mod:`mmvssm.checkpoint.hooks`).
    * ``forward(images)`` takes (B, in_channels, H, W) (anything else: ValueError) and returns a tuple with
      one feature per ``out_indices`` entry.

    Subclasses set ``arch_zoo`` (and ``arch_optional``), implement :meth:`frozen_modules` (what
    ``frozen_stages`` freezes) and, if the official checkpoints use another key layout,
    :meth:`convert_checkpoint` (and ``convert_classifier_checkpoint`` for the official classification
    files, ``fresh_key_prefixes`` for the layers a dense backbone adds to them); their ``__init__`` ends
    with ``self._freeze_stages()``.

    Args:
        frozen_stages: stages to freeze (-1: none).
        norm_eval: keep every BatchNorm in eval mode while training.
        init_cfg: mmengine initialisation config.
        pretrained: checkpoint path, shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    # name -> dict of the required arch keys; set by each subclass
    arch_zoo: Dict[str, dict] = {}
    # arch keys a dict may add to the required ones (with their defaults); set by subclasses that have any
    arch_optional: Dict[str, object] = {}
    # Official classification state dict (keys as the official model, no ``backbone.`` prefix) ->
    # mmpretrain ``ImageClassifier`` keys (``backbone.*``, ``head.*``): used when such a file enters a whole
    # classifier (``load_from``, tools/test.py) and by tools/model_converters. Set by subclasses to the
    # function beside the model (``staticmethod(official_to_classifier)``); None: no official classifier.
    convert_classifier_checkpoint: Optional[Callable[[Dict[str, torch.Tensor]], dict]] = None
    # Key prefixes of the layers a dense backbone adds to its official classification layout (output norms,
    # pyramid): an ImageNet file has none, so ``load_pretrained`` initialises them fresh and reports them
    # apart from the expected tensors.
    fresh_key_prefixes: Tuple[str, ...] = ()

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False,
                 init_cfg: Optional[dict] = None, pretrained: Optional[str] = None) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'{type(self).__name__}: give either pretrained={pretrained!r} or '
                                 f"init_cfg={init_cfg!r}, not both (pretrained=PATH means "
                                 f"init_cfg=dict(type='Pretrained', checkpoint=PATH))")
            if not isinstance(pretrained, str):
                raise TypeError(f'{type(self).__name__}: pretrained must be a checkpoint path, got '
                                f'{pretrained!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        attach_weight_hooks(self)  # official layouts are converted and checked on every load
        if not isinstance(frozen_stages, int) or frozen_stages < -1:
            raise ValueError(f'frozen_stages must be an int >= -1, got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        """The arch settings of a name in ``arch_zoo`` or of a dict with the same keys.

        Returns a new dict holding the required keys and every optional key (defaults filled in).
        """
        name = cls.__name__
        required = set(next(iter(cls.arch_zoo.values())))
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f'{name}: unknown arch {arch!r}; choose one of {sorted(cls.arch_zoo)} or '
                                 f'pass a dict with the keys {sorted(required)}')
            arch = cls.arch_zoo[arch.lower()]
        if not isinstance(arch, dict):
            raise ValueError(f'{name}: arch must be one of {sorted(cls.arch_zoo)} or a dict, got {arch!r}')
        missing, unknown = required - set(arch), set(arch) - required - set(cls.arch_optional)
        if missing or unknown:
            optional = f' (optional: {sorted(cls.arch_optional)})' if cls.arch_optional else ''
            raise ValueError(f'{name}: an arch dict needs exactly the keys {sorted(required)}{optional}; '
                             f'missing arch keys {sorted(missing)}, unknown arch keys {sorted(unknown)}')
        settings = dict(cls.arch_optional, **arch)
        cls._check_arch_values(settings, dict(next(iter(cls.arch_zoo.values())), **cls.arch_optional))
        return settings

    @classmethod
    def _check_arch_values(cls, settings: dict, reference: dict) -> None:
        """Each value of the kind the ``arch_zoo``/``arch_optional`` entry has: a positive int where the
        table holds an int, a positive int or a non-empty list of them where it holds a list (other kinds, e.g.
        ``dt_rank='auto'``, are checked by the model). A ValueError names the key and the valid range."""
        def positive_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for key, value in settings.items():
            ref = reference.get(key)
            if isinstance(ref, int) and not isinstance(ref, bool) and not positive_int(value):
                raise ValueError(f'{cls.__name__}: arch[{key!r}] must be an int >= 1 (e.g. {ref}), got '
                                 f'{value!r}')
            if isinstance(ref, (list, tuple)) and not positive_int(value) and not (
                    isinstance(value, (list, tuple)) and value and all(map(positive_int, value))):
                raise ValueError(f'{cls.__name__}: arch[{key!r}] must be a list of ints >= 1, one per stage '
                                 f'(e.g. {list(ref)}), got {value!r}')

    # ------------------------------------------------------------------ checks that need the arch
    def _check_frozen_stages(self, num_stages: int, unit: str = 'stages') -> None:
        """Refuse a ``frozen_stages`` beyond the model's ``num_stages`` stages (or layers)."""
        if self.frozen_stages > num_stages:
            raise ValueError(f'{type(self).__name__}: frozen_stages={self.frozen_stages} but the model has '
                             f'only {num_stages} {unit} (use -1..{num_stages})')

    def _parse_out_indices(self, out_indices: Union[int, Sequence[int]],
                           num_stages: int) -> Tuple[int, ...]:
        """``out_indices`` normalised (negative entries counted from the end) and validated: non-empty,
        ints in [0, num_stages), strictly increasing; a ValueError naming the valid range otherwise."""
        name, valid = type(self).__name__, f'valid: 0..{num_stages - 1}, or -{num_stages}..-1 from the end'
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        if not out_indices or not all(isinstance(i, int) for i in out_indices):
            raise ValueError(f'{name}: out_indices must be an int or a non-empty sequence of ints ({valid}), '
                             f'got {out_indices!r}')
        for i in out_indices:
            if not -num_stages <= i < num_stages:
                raise ValueError(f'{name}: out_indices entry {i} is out of range for {num_stages} stages '
                                 f'({valid}), got {tuple(out_indices)}')
        indices = tuple(i % num_stages for i in out_indices)
        if list(indices) != sorted(set(indices)):
            raise ValueError(f'{name}: out_indices must be increasing without repeats (the order forward '
                             f'returns them in), got {tuple(out_indices)} = stages {indices}')
        return indices

    def _log_scan_backend(self, scan_backend: str) -> None:
        """Write to the run's log which selective-scan backend each device will use (and validate it)."""
        plan = backend_plan(scan_backend)
        slow = plan.get('cuda') == 'chunked'
        print_log(f'{type(self).__name__}: selective scan backend {scan_backend!r}: '
                  + ', '.join(f'{dev} tensors -> {name}' for dev, name in plan.items())
                  + (' (slow on GPUs: `pip install triton`)' if slow else ''),
                  logger='current', level=logging.WARNING if slow else logging.INFO)

    # ------------------------------------------------------------------ freezing
    def frozen_modules(self) -> List[nn.Module]:
        """Modules frozen by ``self.frozen_stages``; subclasses define the stage order."""
        return []

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SSMBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ------------------------------------------------------------------ checkpoints
    def convert_checkpoint(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map an official (or other foreign) state dict onto our key layout. Default: unchanged."""
        return state_dict

    def load_pretrained(self, path: str, prefix: Optional[str] = None,
                        min_restored: float = DEFAULT_MIN_RESTORED) -> Dict[str, list]:
        """Load a checkpoint file (official layout or ours) into this backbone.

        See :func:`mmvssm.checkpoint.load_pretrained`: the keys under ``prefix`` (default: the
        ``backbone.`` part of a whole-model file) are converted, loaded and reported; restoring less than
        ``min_restored`` of this backbone's tensors, or any tensor of another shape, is an error.

        Returns:
            dict with the ``restored``, ``missing``, ``mismatched`` and ``unexpected`` key lists.
        """
        return load_pretrained(self, path, prefix=prefix, min_restored=min_restored)
