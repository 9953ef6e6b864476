# Plug-in example (mmdet): mmdet's OWN Mask R-CNN, COCO, schedule and runtime files, with Vim-Small
# swapped in for ResNet-50. Vim returns its layers (5, 11, 17, 23) through its own feature pyramid at
# strides 4/8/16/32, the strides mmdet's FPN, anchors and RoI extractors assume, so only the FPN's
# `in_channels` changes (Vim-Small width 384 where ResNet gives 256..2048). `NeckWiringCheckHook` (from
# mmvssm) stops the run before the first iteration, naming the fix, if channels or strides disagree;
# `ValidateData` (from mmvssm) makes degenerate boxes and non-finite pixels errors naming the file.
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
embed_dims = 384
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=24),  # = arch 'small'; a dict so overrides merge
        img_size=224,
        patch_size=16,
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        # official ImageNet weights (vim_s_midclstok_80p5acc.pth), converted on loading:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vim_s_midclstok_80p5acc.pth'),
    ),
    neck=dict(in_channels=[embed_dims] * 4))
custom_hooks = [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))
