"""Classification head of Vim: a linear layer on the middle class token."""
from typing import Optional, Tuple

from mmengine.registry import MODELS
from mmpretrain.models.heads import ClsHead
from torch import Tensor, nn


@MODELS.register_module()
class VimClsHead(ClsHead):
    """``Linear(D, num_classes)`` on Vim's class token (official key ``head.*`` -> ``head.fc.*``).

    Takes the last backbone output: either tokens (B, M + 1, D) from ``Vim(out_type='raw',
    with_cls_token=True, final_norm=True)``, whose class token sits in the middle at index
    M // 2 = (L - 1) // 2, or the class token (B, D) itself (``out_type='cls_token'``).

    Args:
        num_classes: number of classes.
        in_channels: width D of the backbone.
        init_cfg: official init: truncated normal (std 0.02) weight, zero bias.
        **kwargs: passed to :class:`mmpretrain.models.heads.ClsHead` (``loss``, ``topk``, ...).
    """

    def __init__(self, num_classes: int, in_channels: int,
                 init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'VimClsHead: num_classes must be positive, got {num_classes}')
        self.num_classes, self.in_channels = num_classes, in_channels
        self.fc = nn.Linear(in_channels, num_classes)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """The class token (B, D) of the last backbone output."""
        x = feats[-1]
        if x.dim() == 3:
            return x[:, (x.shape[1] - 1) // 2]
        if x.dim() != 2:
            raise ValueError(f'VimClsHead: expected tokens (B, L, D) or a class token (B, D), got '
                             f"{tuple(x.shape)}; build the backbone with out_type='raw' or 'cls_token'")
        return x

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        return self.fc(self.pre_logits(feats))
