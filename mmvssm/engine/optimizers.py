"""Layer-wise learning-rate decay for plain (isotropic) backbones, by parameter-name rules.

The lr of a parameter in "layer" ``i`` (0 = embeddings, 1..N = the N blocks, N + 1 = everything after:
final norm, necks, heads) is ``base_lr * rate ** (N + 1 - i)`` (BEiT/ViTDet convention). Layers are found
with regular expressions on the full parameter name, so one constructor serves any backbone; the default
rules fit Vim (``backbone.layers.{i}``) and ViT-style names (``backbone.blocks.{i}``).

The official Vim segmentation code meant to do this but matched ``backbone.blocks.*``, which Vim does not
have, so its decay was inert for the blocks (spec vim_detail.md §3.1); with these rules it applies.

Named presets (``paramwise_cfg.preset``) give the rules of the official runs as they actually applied, so a
config can reproduce a published run and a corrected variant can sit beside it:

* ``'per_layer'`` (default): the corrected rules above.
* ``'vim_seg_as_run'``: hustvl/Vim ``seg/mmcv_custom/layer_decay_optimizer_constructor.py``: layers found by
  ``backbone.blocks.{i}`` (absent in Vim), so every Vim layer, the pyramid and both heads get x1 and only
  ``pos_embed``/``cls_token``/``patch_embed`` get ``rate ** (N + 1)``; no weight decay for 1-D tensors and
  biases only (its ``pos_embed``/``cls_token`` test compares bare names and never matches).
* ``'vim_det_as_run'``: hustvl/Vim ``det/detectron2/modeling/backbone/vim.py::get_vim_lr_decay_rate`` with
  detectron2's ``get_default_optimizer_params(weight_decay_norm=0, overrides={'pos_embed': wd 0})``: per-layer
  decay over ``.layers.{i}`` (it does reach the layers), and weight decay on everything but ``pos_embed``:
  biases, RMSNorm (a custom module), A_log/D and the LayerNorms of the pyramid and heads (detectron2's
  channels-first ``LN`` is not a torch norm class) are all decayed.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

# (regex, layer id) for fixed ids, (regex with one group, offset) for numbered blocks: id = int(group)+offset.
DEFAULT_LAYER_RULES: Tuple[Dict, ...] = (
    dict(pattern=r'^backbone\.(cls_token|pos_embed|patch_embed)\b', layer_id=0),
    dict(pattern=r'^backbone\.(?:layers|blocks)\.(\d+)\.', offset=1),
)
# No weight decay: biases, 1-D tensors (norms, D), embeddings, and Mamba's A_log (the Mamba authors flag
# A_log/D `_no_weight_decay`; the official Vim trainers ignored that flag and decayed A_log and pos_embed).
DEFAULT_NO_DECAY: Tuple[str, ...] = (r'\.bias$', r'(^|\.)(pos_embed|cls_token)$', r'(^|\.)A(_b)?_log$')
PRESETS: Dict[str, Dict] = {
    'per_layer': dict(layer_rules=DEFAULT_LAYER_RULES, no_decay_patterns=DEFAULT_NO_DECAY, no_decay_1d=True),
    'vim_seg_as_run': dict(
        layer_rules=(dict(pattern=r'^backbone\.(cls_token|mask_token|pos_embed)$', layer_id=0),
                     dict(pattern=r'^backbone\.patch_embed', layer_id=0),
                     dict(pattern=r'^backbone\.blocks\.(\d+)\.', offset=1)),
        no_decay_patterns=(r'\.bias$', r'^(pos_embed|cls_token)$'), no_decay_1d=True),
    'vim_det_as_run': dict(
        # its substring tests: '.pos_embed'/'.patch_embed' in the name; the first '.layers.{i}' unless
        # '.residual.'
        layer_rules=(dict(pattern=r'^backbone.*\.(?:pos_embed|patch_embed)', layer_id=0),
                     dict(pattern=r'^backbone(?!.*\.residual\.).*?\.layers\.(\d+)', offset=1)),
        no_decay_patterns=(r'(^|\.)pos_embed$',), no_decay_1d=False),
}
ALLOWED_KEYS = {'num_layers', 'layer_decay_rate', 'layer_rules', 'no_decay_patterns', 'preset'}


def layer_id_of(name: str, num_layers: int, rules: Sequence[Dict]) -> int:
    """Layer id of a parameter name: the first matching rule, else ``num_layers + 1``."""
    for rule in rules:
        match = re.search(rule['pattern'], name)
        if match:
            layer_id = rule['layer_id'] if 'layer_id' in rule else int(match.group(1)) + rule['offset']
            if not 0 <= layer_id <= num_layers + 1:
                raise ValueError(f'layer decay: parameter {name!r} got layer id {layer_id} outside '
                                 f'0..{num_layers + 1}; is paramwise_cfg.num_layers={num_layers} the '
                                 f'number of blocks of the backbone?')
            return layer_id
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay and name-based weight-decay exemptions.

    ``paramwise_cfg``:
        num_layers (int): number of blocks N (24 for Vim).
        layer_decay_rate (float): decay per layer, e.g. 0.92.
        preset (str): one of :data:`PRESETS` ('per_layer', 'vim_seg_as_run', 'vim_det_as_run'), the
            defaults of the two options below and of whether 1-D tensors are exempt from weight decay.
        layer_rules (list[dict]): ordered rules, first match wins; each ``dict(pattern=REGEX,
            layer_id=INT)`` or ``dict(pattern=REGEX_WITH_ONE_GROUP, offset=INT)``. Default: the preset's
            (:data:`DEFAULT_LAYER_RULES`).
        no_decay_patterns (list[str]): regexes of parameters without weight decay (1-D tensors never
            get any, except with 'vim_det_as_run'). Default: the preset's (:data:`DEFAULT_NO_DECAY`).

    Each parameter group carries ``layer_id`` and ``lr_scale`` for inspection.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = set(paramwise_cfg) - ALLOWED_KEYS
        if unknown:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: unknown paramwise_cfg keys '
                             f'{sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}')
        for key in ('num_layers', 'layer_decay_rate'):
            if key not in paramwise_cfg:
                raise ValueError(f'LayerDecayOptimWrapperConstructor: paramwise_cfg needs {key!r} '
                                 f'(e.g. num_layers=24, layer_decay_rate=0.92 for Vim)')
        self.num_layers = int(paramwise_cfg['num_layers'])
        self.decay_rate = float(paramwise_cfg['layer_decay_rate'])
        self.preset = paramwise_cfg.get('preset', 'per_layer')
        if self.preset not in PRESETS:
            raise ValueError(f'LayerDecayOptimWrapperConstructor: unknown preset {self.preset!r}; choose '
                             f'one of {sorted(PRESETS)}')
        preset = PRESETS[self.preset]
        self.no_decay_1d = preset['no_decay_1d']
        self.layer_rules = list(paramwise_cfg.get('layer_rules', preset['layer_rules']))
        for rule in self.layer_rules:
            if 'pattern' not in rule or ('layer_id' in rule) == ('offset' in rule):
                raise ValueError(f'LayerDecayOptimWrapperConstructor: a layer rule needs `pattern` and '
                                 f'exactly one of `layer_id`/`offset`, got {rule}')
        self.no_decay = [re.compile(p) for p in paramwise_cfg.get('no_decay_patterns',
                                                                  preset['no_decay_patterns'])]
        # A non-empty paramwise_cfg makes the parent call add_params (its own options are not used).
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        base_lr = self.base_lr
        base_wd = self.base_wd or 0.
        groups: Dict[Tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            layer_id = layer_id_of(name, self.num_layers, self.layer_rules)
            decay = ((param.ndim > 1 or not self.no_decay_1d)
                     and not any(p.search(name) for p in self.no_decay))
            key = (layer_id, decay)
            if key not in groups:
                scale = self.decay_rate ** (self.num_layers + 1 - layer_id)
                groups[key] = dict(params=[], param_names=[], layer_id=layer_id, lr_scale=scale,
                                   lr=base_lr * scale, weight_decay=base_wd if decay else 0.)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups[k] for k in sorted(groups))
        summary = ', '.join(f'layer {g["layer_id"]} ({"decay" if k[1] else "no decay"}): '
                            f'{len(g["params"])} params x{g["lr_scale"]:.4f}'
                            for k, g in sorted(groups.items()))
        print_log(f'layer decay {self.decay_rate} ({self.preset}) over {self.num_layers} layers: {summary}',
                  logger=MMLogger.get_current_instance(), level=10)  # DEBUG
