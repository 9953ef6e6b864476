# EfficientViM-M1 ImageNet-1k classifier (mmpretrain), 6,679,458 params, official top-1 72.9 (300 ep) /
# 73.5 (450 ep), 224x224. Head: multi-stage hidden-state fusion (EfficientViMFusionHead), which takes the
# backbone's (stage maps, hidden states) output.
# Official weights (EfficientViM_M1_e300/e450.pth, mlvlab/EfficientViM README):
#   python tools/model_converters/efficient_vim2mmvssm.py EfficientViM_M1_e450.pth m1.pth [--ema]
# and pass m1.pth to tools/test.py (or load_from); --ema takes the EMA weights, which give the reported
# top-1. Or load the official file directly (its non-EMA `model` weights) with
#   model.backbone.init_cfg=dict(type='Pretrained', checkpoint=F), model.head.init_cfg=<same>.
# Training recipe of the official code (classification/main.py, utils/config.py): 8 GPUs x 256, AdamW
# lr 2e-3 (not batch-scaled), wd 0.05 except 1-D tensors/biases/A/D/fusion weights (alpha and LayerNorm
# weights ARE decayed), 20 warm-up epochs from 2e-6, per-step cosine to 2e-5 at epoch E, then 10 epochs at
# 2e-5, grad-norm clip 0.02, AMP, RandAugment m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0,
# label smoothing 0.1, EMA 0.9995 (its weights give the reported top-1). Not reproduced: MESA
# self-distillation (official default from epoch 0.25*E), which mmpretrain does not provide.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
runner_type = 'SafeCheckpointRunner'  # crash-safe checkpoints (mmvssm.checkpoint)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
epochs = 300  # E (300 or 450); the run lasts E + 10 cooldown epochs
model = dict(
    type='ImageClassifier',
    backbone=dict(type='EfficientViM', arch='m1', out_indices=(0, 1, 2), return_hidden_states=True),
    head=dict(
        type='EfficientViMFusionHead',
        num_classes=1000,
        in_channels=(128, 192, 320),
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=256)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # BN and biases are exempt by type; the 1-D parameters A, D and the fusion weights by name.
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'mixer.A': dict(decay_mult=0.0), 'mixer.D': dict(decay_mult=0.0),
                     'head.weights': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=0.02))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    # LR stays at eta_min for the 10 cooldown epochs after the cosine ends.
    dict(type='CosineAnnealingLR', eta_min=2e-5, by_epoch=True, begin=20, end=epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=epochs + 10, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='EMAHook', momentum=5e-4, priority='ABOVE_NORMAL')]
