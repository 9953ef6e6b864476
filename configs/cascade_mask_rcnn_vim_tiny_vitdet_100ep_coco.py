# Cascade Mask R-CNN + Vim-Tiny, ViTDet style, COCO, LSJ 1024, "100 epochs" (184,375 iterations x 64
# images): the official run as it actually ran (hustvl/Vim det/, detectron2 LazyConfig
# det/projects/ViTDet/configs/COCO/cascade_mask_rcnn_vimdet_t_100ep_adj1.py, launched by
# det/scripts/ft_vim_tiny_vimdet.sh; it inherits cascade_mask_rcnn_vimdet_b_100ep.py,
# mask_rcnn_vimdet_b_100ep.py, det/configs/common/models/mask_rcnn_vimdet.py and
# det/projects/ViTDet/configs/common/coco_loader_lsj.py). Field by field with sources and the deliberate
# differences (mmdet's cascade has one mask head per stage): docs/recipes.md.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]
# the RoI head of detectron2's cascade (one mask head, gradient scaling) needs mmdet: imported here only
custom_imports = dict(imports=['mmvssm', 'mmvssm.models.heads.vitdet_cascade_roi_head'],
                      allow_failed_imports=False)
# mmdet's runtime (through lsj-100e_coco-instance.py), not ours: the data checks are listed here
custom_hooks = [dict(type='ValidateData')]
embed_dims = 192
pretrained = None  # an official ImageNet Vim checkpoint (class token and its pos entry are dropped)
image_size = (1024, 1024)
ln = dict(type='LN2d', requires_grad=True)  # detectron2's channels-first LayerNorm ("LN")
model = dict(
    # RGB mean/std of ImageNet; every image is padded to 1024x1024 after normalisation (detectron2
    # square_pad=1024 pads with 0 in the normalised space): a divisor of 1024 on <= 1024 images does that.
    data_preprocessor=dict(pad_size_divisor=1024, pad_mask=True),
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=24),
        img_size=1024,  # position embedding stored at 64x64 (resized from 14x14 on loading)
        patch_size=16,
        out_indices=(23, ),  # the last layer only ...
        feature='residual',  # ... as last_layer_process='add': the final residual stream, no norm_f
        multi_scale=False,
        with_cls_token=False,
        final_norm=False,
        rope=True,  # if_rope=True, if_rope_residual=True, pt_hw_seq_len=14 (grid 64x64)
        rope_residual=True,
        rope_pt_grid=14,
        residual_in_fp32=True,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',  # strides 4, 8, 16, 32 + LastLevelMaxPool 64, LN, 256 channels
        in_channels=embed_dims,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_pool=True),
    rpn_head=dict(
        num_convs=2,  # "2conv in RPN"
        loss_bbox=dict(_delete_=True, type='L1Loss', loss_weight=1.0)),  # detectron2 smooth_l1_beta 0
    roi_head=dict(
        type='ViTDetCascadeRoIHead',  # one mask head on stage-1 samples / final boxes, grads x1/3 per stage
        stage_loss_weights=[1, 1, 1],
        bbox_head=[
            dict(
                type='Shared4Conv1FCBBoxHead',  # 4conv1fc with LN ("conv_norm='LN'")
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                norm_cfg=ln,
                roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(
                    type='DeltaXYWHBBoxCoder',
                    target_means=[0., 0., 0., 0.],
                    target_stds=stds),  # Box2BoxTransform weights (10,10,5,5), (20,20,10,10), (30,30,15,15)
                reg_class_agnostic=True,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [1 / 30, 1 / 30, 1 / 15, 1 / 15])
        ],
        mask_head=dict(norm_cfg=ln)),  # 4 convs with LN
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=1000),  # detectron2 post_nms_topk (1000, 1000)
        # stages 2 and 3 label every refined box of the previous stage without subsampling (detectron2
        # _match_and_label_boxes): <= 512 candidates, all kept with pos_fraction 1
        rcnn=[
            dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                              match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25 if iou == 0.5 else 1.0,
                             neg_pos_ub=-1, add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in (0.5, 0.6, 0.7)
        ]),
    test_cfg=dict(rcnn=dict(score_thr=0.05)))

# LSJ at 1024 (coco_loader_lsj.py): flip, ResizeScale 0.1-2.0 to 1024, FixedSizeCrop 1024 without pad,
# boxes recomputed; test: shortest edge 1024 capped at 1024 (the long side becomes 1024).
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# total batch 64 (dataloader.train.total_batch_size): 4 GPUs x 16 as the official script; on N GPUs set
# train_dataloader.batch_size = 64 / N
train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root='data/coco/',
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW lr 1e-4, wd 0.1, betas (0.9, 0.999) (common/optim.py); layer decay 0.837 as get_vim_lr_decay_rate
# applied it: layers.{i} x 0.837 ** (24 - i), pos/patch embedding x 0.837 ** 25, neck and heads x1; weight
# decay on every parameter but pos_embed (detectron2 exempts torch norm classes only; RMSNorm and its LN
# are not). AMP as train.amp.enabled=True.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.837, preset='vim_det_as_run'))
max_iters = 184375  # "100 ep = 184375 iters * 64 images/iter / 118000 images/ep"
# WarmupParamScheduler(warmup_length=250 / max_iter, warmup_factor=0.001), linear: factor
# 0.001 + 0.999 * t / 250 for t < 250 (mmengine's LinearLR reaches 1 at end - 1, hence 251); then
# MultiStepParamScheduler x0.1 from iteration 163889 and x0.01 from 177546.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=251),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[163889, 177546],
         gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=5000)
runner_type = 'SafeCheckpointRunner'  # crash-safe checkpoints (mmvssm.checkpoint)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=100))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=64)
