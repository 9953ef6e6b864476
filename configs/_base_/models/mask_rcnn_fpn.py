# mmdet's Mask R-CNN with FPN (R50-FPN heads). Each config sets the backbone with
# `backbone=dict(_delete_=True, type=..., ...)` and the FPN in_channels.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
model = dict(backbone=dict(_delete_=True, type='Vim', arch='tiny'))
