# Plug-in example (mmseg): mmseg's OWN ViT UperNet and ADE20K files, with EfficientViM-M1 swapped in.
# EfficientViM's three stages run at strides 16/32/64; as in the EfficientViM segmentation configs the
# UperNet head reads them directly, so the ViT base's MultiLevelNeck is removed (`neck=None`) and the heads
# read three maps (in_index 0..2). `pretrained=None` and `data_preprocessor.size` as in
# upernet_vit_vim-s_ade20k.py.
_base_ = [
    'mmseg::_base_/models/upernet_vit-b16_ln_mln.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
# The two lines for crash-safe checkpoints (atomic saves, pruning after the new file is complete, resume
# from the newest readable checkpoint; mmvssm.checkpoint). Without them mmengine's own Runner and
# CheckpointHook are used, and weights still load, convert and are checked the same way.
runner_type = 'SafeCheckpointRunner'
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
crop_size = (512, 512)
dims = [128, 192, 320]
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch=dict(embed_dims=dims, depths=[2, 2, 2], state_dims=[49, 25, 9]),  # = arch 'm1'
        out_indices=(0, 1, 2),
        # official ImageNet weights, converted on loading:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/EfficientViM_M1_e450.pth'),
    ),
    neck=None,
    decode_head=dict(in_channels=dims, in_index=[0, 1, 2], num_classes=150),
    auxiliary_head=dict(in_channels=dims[1], in_index=1, num_classes=150))
custom_hooks = [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
train_dataloader = dict(batch_size=4)
