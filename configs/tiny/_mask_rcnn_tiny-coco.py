# Shared base of the ready-to-run tiny Mask R-CNN configs (not runnable itself: no backbone): the
# generated tiny COCO sample at 128 px, narrow FPN/heads, fewer sampled RoIs and a short schedule, so
# 2 CPU cores train it in minutes. Each configs/tiny/mask_rcnn_<backbone>_tiny-coco.py sets a reduced
# backbone and neck.in_channels.
_base_ = [
    '../_base_/models/mask_rcnn_fpn.py', '../_base_/datasets/coco_instance_tiny.py',
    '../_base_/default_runtime_det.py', '../_base_/schedules/det_1x.py'
]
width = 64
model = dict(
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=128),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(num_convs=2, in_channels=width, conv_out_channels=width)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
max_epochs = 6
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[5], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='AtomicCheckpointHook', interval=2, max_keep_ckpts=2))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
