"""detectron2's Cascade R-CNN RoI head (as the official Vim/ViTDet detection runs) on mmdet's cascade.

Differences from mmdet's ``CascadeRoIHead`` that this class removes (detectron2
``modeling/roi_heads/cascade_rcnn.py``, hustvl/Vim ``det/``):

* **one mask head**, trained on the first stage's samples (detectron2 passes the proposals sampled before
  the cascade to ``_forward_mask``) and run once on the final boxes; mmdet builds one per stage, trains each
  on its stage's samples and averages them at test;
* the pooled box features of every stage pass their gradient on scaled by ``1 / num_stages``
  (``_ScaleGradient``), with each stage's losses weighted 1 (set ``stage_loss_weights=[1, 1, 1]``).

mmdet's tensor-mode ``forward`` (FLOPs) calls ``_mask_forward`` once per stage: here the same single head,
so its average equals the one prediction.

Imported by the configs that use it (``custom_imports``), so ``import mmvssm`` does not import mmdet.
"""
from typing import List, Tuple

import torch
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import InstanceList
from mmengine.structures import InstanceData
from torch import Tensor, nn


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``scale`` (detectron2 ``_ScaleGradient``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


@MODELS.register_module()
class ViTDetCascadeRoIHead(CascadeRoIHead):
    """Cascade RoI head with one mask head and detectron2's per-stage gradient scaling.

    Arguments as :class:`mmdet.models.roi_heads.CascadeRoIHead`; ``mask_head`` and ``mask_roi_extractor``
    must be single configs (one head). Keys: ``mask_head.0.*`` (and ``mask_roi_extractor.0`` when not
    shared).
    """

    def init_mask_head(self, mask_roi_extractor, mask_head) -> None:
        if isinstance(mask_head, list) or isinstance(mask_roi_extractor, list):
            raise ValueError('ViTDetCascadeRoIHead: one mask head (and mask RoI extractor) for all stages, '
                             'as detectron2; give single configs, not lists')
        self.mask_head = nn.ModuleList([MODELS.build(mask_head)])
        if mask_roi_extractor is not None:
            self.share_roi_extractor = False
            self.mask_roi_extractor = nn.ModuleList([MODELS.build(mask_roi_extractor)])
        else:
            self.share_roi_extractor = True
            self.mask_roi_extractor = self.bbox_roi_extractor

    def _bbox_forward(self, stage: int, x: Tuple[Tensor], rois: Tensor) -> dict:
        feats = self.bbox_roi_extractor[stage](x[:self.bbox_roi_extractor[stage].num_inputs], rois)
        if self.training:
            feats = _ScaleGradient.apply(feats, 1.0 / self.num_stages)
        cls_score, bbox_pred = self.bbox_head[stage](feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=feats)

    def _mask_forward(self, stage: int, x: Tuple[Tensor], rois: Tensor) -> dict:
        # the single head; a shared extractor is the first stage's (the same for every stage in ViTDet)
        extractor = self.mask_roi_extractor[0]
        return dict(mask_preds=self.mask_head[0](extractor(x[:extractor.num_inputs], rois)))

    def mask_loss(self, stage: int, x: Tuple[Tensor], sampling_results, batch_gt_instances) -> dict:
        if stage != 0:  # only the first stage's samples train the mask head
            return dict(loss_mask=dict())
        return super().mask_loss(0, x, sampling_results, batch_gt_instances)

    def predict_mask(self, x: Tuple[Tensor], batch_img_metas: List[dict], results_list: InstanceList,
                     rescale: bool = False) -> List[InstanceData]:
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            return super().predict_mask(x, batch_img_metas, results_list, rescale)
        mask_preds = self._mask_forward(0, x, mask_rois)['mask_preds']
        mask_preds = mask_preds.split([len(res) for res in results_list], 0)
        return self.mask_head[0].predict_by_feat(
            mask_preds=mask_preds, results_list=results_list, batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg, rescale=rescale)
