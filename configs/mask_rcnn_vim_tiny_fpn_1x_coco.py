# Mask R-CNN + FPN over the 4 pyramid outputs (strides 4/8/16/32) of Vim-Tiny, COCO 1x.
# Plain-backbone (ViTDet) conventions: AdamW lr 1e-4, wd 0.1, layer decay 0.837 (official det Ti/S value),
# position embedding stored at 1024 (64x64 grid, resized from a 224 checkpoint on loading) and
# interpolated to each batch's padded size at run time.
_base_ = [
    '_base_/models/mask_rcnn_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    '_base_/schedules/det_1x.py', '_base_/default_runtime_det.py'
]
embed_dims = 192
pretrained = None
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=24),
        img_size=1024,
        patch_size=16,
        out_indices=(5, 11, 17, 23),
        with_cls_token=False,
        final_norm=False,
        drop_path_rate=0.1,
        pyramid_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=256, num_outs=5))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.837))
