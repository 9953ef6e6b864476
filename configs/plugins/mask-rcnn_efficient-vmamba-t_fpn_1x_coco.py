# Plug-in example (mmdet): mmdet's OWN Mask R-CNN, COCO, schedule and runtime files, with
# EfficientVMamba-T swapped in for ResNet-50. Its four stages are at strides 4/8/16/32 like ResNet's, so
# only the FPN's `in_channels` changes (the stage widths).
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
dims = [48, 96, 192, 384]
model = dict(
    backbone=dict(
        _delete_=True,
        type='EfficientVMamba',
        arch=dict(dims=dims, depths=[2, 2, 4, 2]),  # = arch 't'; a dict so overrides merge
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        # official ImageNet weights, converted on loading:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/efficient_vmamba_tiny.ckpt'),
    ),
    neck=dict(in_channels=dims))
custom_hooks = [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
