# EfficientVMamba-T ImageNet-1k classifier (mmpretrain), 6,493,660 params, official top-1 76.5.
# Official head: LayerNorm -> global average pool -> Linear. Here the LayerNorm is the backbone's
# outnorm3 (out_indices=(3,)), then mmpretrain's GlobalAveragePooling and LinearClsHead.
# Official weights: convert with tools/model_converters/efficient_vmamba2mmvssm.py and use load_from.
# Training recipe of the released checkpoints (their training logs, not the repo's yaml): AdamW lr 2e-3
# (no batch scaling), wd 0.04 on >=2-D weights only, 20 warm-up epochs from 1e-7, per-step cosine to
# 1e-6 over 300 epochs, grad-norm clip 1.0, AMP, label smoothing 0.1, RandAugment m9-mstd0.5, random
# erasing 0.25, Mixup 0.2 / CutMix 1.0, drop_path 0.1, EMA 0.9999, batch 2048 (16 GPUs x 128).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
runner_type = 'SafeCheckpointRunner'  # crash-safe checkpoints (mmvssm.checkpoint)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
model = dict(
    type='ImageClassifier',
    backbone=dict(type='EfficientVMamba', arch='t', out_indices=(3, ), drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.2), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.04, eps=1e-8, betas=(0.9, 0.999)),
    # The official trainer exempts 1-D tensors and biases (norms, Ds) from weight decay.
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-5, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
