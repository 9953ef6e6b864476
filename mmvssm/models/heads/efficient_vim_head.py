"""Multi-stage hidden-state fusion (MSF) classification head of EfficientViM for mmpretrain."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS
from mmpretrain.models.heads import ClsHead
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from mmvssm.checkpoint import attach_weight_hooks, load_pretrained
from ..layers import ChannelLayerNorm
from ..pretrained import EFFICIENT_VIM_HEAD_KEY_PREFIXES, PretrainedInit, flatten_norm_params


@MODELS.register_module()
class EfficientViMFusionHead(PretrainedInit, ClsHead):
    """EfficientViM's multi-stage hidden-state fusion head.

    For each stage s the hidden state h_s (B, C_s, N_s) of its last block is channel-normalised
    (``norm.{s}``), averaged over the N_s states and classified (``heads.{s}``); the final feature map
    (B, C_last, H, W) is channel-normalised (``norm.{S}``), average-pooled and classified
    (``heads.{S}``). The logits are summed with weights ``softmax(weights)`` (``weights`` init ones).
    With ``distillation=True`` a second set of heads (``heads_dist``, ``weights_dist``) reuses the same
    pooled features; training returns ``(logits, logits_dist)`` and evaluation their mean.

    The backbone must be ``EfficientViM(return_hidden_states=True, out_indices=<all stages>)``: the head
    takes its ``(stage_maps, hidden_states)`` output.

    Args:
        num_classes: number of classes.
        in_channels: channels of each stage (``embed_dims`` of the backbone).
        distillation: add the distillation heads (official ``*_dist`` checkpoints).
        loss: classification loss config.
        init_cfg: defaults to trunc-normal(0.02) linear layers with zero bias (as the official code);
            ``dict(type='Pretrained', checkpoint=PATH)`` loads the head from an official or mmvssm
            checkpoint.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: Sequence[int],
                 distillation: bool = False,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                 **kwargs) -> None:
        super().__init__(loss=loss, init_cfg=init_cfg, **kwargs)
        attach_weight_hooks(self)  # official layout: converted on load (convert_checkpoint)
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(f'EfficientViMFusionHead: num_classes must be a positive int, got {num_classes!r}')
        if len(in_channels) < 1:
            raise ValueError('EfficientViMFusionHead: in_channels needs one entry per backbone stage')
        self.num_classes = num_classes
        self.in_channels = tuple(in_channels)
        self.distillation = distillation
        # One LN per stage's hidden state, plus one for the final feature map.
        pooled_dims = self.in_channels + self.in_channels[-1:]
        self.norm = nn.ModuleList([ChannelLayerNorm(c) for c in pooled_dims])
        self.heads = nn.ModuleList([nn.Linear(c, num_classes) for c in pooled_dims])
        self.weights = nn.Parameter(torch.ones(len(pooled_dims)))
        if distillation:
            self.heads_dist = nn.ModuleList([nn.Linear(c, num_classes) for c in pooled_dims])
            self.weights_dist = nn.Parameter(torch.ones(len(pooled_dims)))

    def pre_logits(self, feats: Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]) -> List[Tensor]:
        """(stage maps, hidden states) -> one pooled (B, C) feature per hidden state, then the final map."""
        if not (isinstance(feats, (tuple, list)) and len(feats) == 2
                and all(isinstance(f, (tuple, list)) for f in feats)):
            raise ValueError('EfficientViMFusionHead expects the (stage_maps, hidden_states) output of '
                             'EfficientViM(return_hidden_states=True); set it in the backbone config')
        maps, hidden_states = feats
        if len(hidden_states) != len(self.in_channels) \
                or [h.shape[1] for h in hidden_states] != list(self.in_channels):
            raise ValueError(f'EfficientViMFusionHead: expected hidden states with channels '
                             f'{list(self.in_channels)} (one per stage: use out_indices covering all '
                             f'stages), got {[tuple(h.shape) for h in hidden_states]}')
        pooled = [norm(h).mean(dim=-1) for norm, h in zip(self.norm, hidden_states)]
        pooled.append(self.norm[-1](maps[-1]).mean(dim=(2, 3)))
        return pooled

    @staticmethod
    def _fuse(heads: nn.ModuleList, weights: Tensor, pooled: List[Tensor]) -> Tensor:
        weights = weights.softmax(dim=-1)
        return sum(w * head(f) for w, head, f in zip(weights, heads, pooled))

    def forward(self, feats: Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]):
        """Returns logits (B, num_classes); with distillation, ``(logits, logits_dist)`` in training mode
        and their mean in eval mode (as the official model)."""
        pooled = self.pre_logits(feats)
        logits = self._fuse(self.heads, self.weights, pooled)
        if not self.distillation:
            return logits
        logits_dist = self._fuse(self.heads_dist, self.weights_dist, pooled)
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def loss(self, feats, data_samples: List[DataSample], **kwargs) -> dict:
        if self.distillation:
            # The distillation logits are trained against a teacher (DeiT hard distillation), which
            # mmpretrain's ImageClassifier does not provide.
            raise NotImplementedError(
                'EfficientViMFusionHead: training with distillation=True needs a teacher model, which '
                'this head does not have; train with distillation=False (the distilled heads are for '
                'evaluating/fine-tuning official *_dist checkpoints)')
        return super().loss(feats, data_samples, **kwargs)

    def convert_checkpoint(self, state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Official classifier layout -> this head: its keys (``norm.*``, ``heads*``, ``weights*``) with
        flattened LayerNorm parameters; the distillation heads are dropped when this head has none.
        Called on the keys under this head's name (:mod:`mmvssm.checkpoint.hooks`)."""
        state = flatten_norm_params({k: v for k, v in state_dict.items()
                                     if k.startswith(EFFICIENT_VIM_HEAD_KEY_PREFIXES)})
        if not self.distillation:
            state = {k: v for k, v in state.items() if not k.startswith(('heads_dist.', 'weights_dist'))}
        return state

    def load_pretrained(self, path: str) -> Dict[str, list]:
        """Load the head from an official checkpoint (any envelope) or an mmvssm/mmpretrain one
        (:func:`mmvssm.checkpoint.load_pretrained`, ``head.`` part of a whole-model file)."""
        return load_pretrained(self, path, default_prefix='head.')
