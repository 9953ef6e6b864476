# Plug-in example (mmdet): mmdet's OWN Mask R-CNN, COCO, schedule and runtime files, with EfficientViM-M1
# swapped in for ResNet-50. EfficientViM's stages run at strides 16/32/64, while mmdet's anchors and RoI
# extractors assume 4/8/16/32(/64): mmdet's FPN would feed them the wrong strides (NeckWiringCheckHook
# refuses that). As in the official detection code, mmvssm's EfficientViMFPN adds the two finer levels
# with transposed convolutions (strides 4 and 8) and outputs the five levels mmdet's heads expect.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
# The two lines for crash-safe checkpoints (atomic saves, pruning after the new file is complete, resume
# from the newest readable checkpoint; mmvssm.checkpoint). Without them mmengine's own Runner and
# CheckpointHook are used, and weights still load, convert and are checked the same way.
runner_type = 'SafeCheckpointRunner'
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
dims = [128, 192, 320]
model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch=dict(embed_dims=dims, depths=[2, 2, 2], state_dims=[49, 25, 9]),  # = arch 'm1'
        out_indices=(0, 1, 2),
        norm_eval=True,
        # official ImageNet weights, converted on loading:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/EfficientViM_M1_e450.pth'),
    ),
    neck=dict(
        _delete_=True,
        type='EfficientViMFPN',
        in_channels=dims,
        out_channels=256,
        num_outs=5,
        start_level=0,
        num_extra_trans_convs=2,
        pre_norm=True))
custom_hooks = [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05))
