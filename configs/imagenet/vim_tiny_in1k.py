# Vim-Tiny ImageNet-1k classifier (mmpretrain) = the official
# vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2: 7,148,008 params,
# official top-1 76.1. The backbone returns the final-normed tokens (norm_f), the head reads the middle
# class token (index M // 2 = 98). Official weights: convert with
# tools/model_converters/vim2mmvssm.py and use `load_from` (keys backbone.* + head.fc.*).
# Training recipe of the official vim/scripts/pt-vim-t.sh (DeiT trainer): batch 1024 (8 x 128), AdamW
# lr 1e-3 (5e-4 x 1024 / 512), wd 0.1 except 1-D tensors, biases, pos_embed and cls_token, 5 warm-up
# epochs from 1e-6, cosine per epoch to 1e-5 over 300 epochs, drop_path 0, no AMP, label smoothing 0.1,
# Mixup 0.8 / CutMix 1.0, RandAugment m9-mstd0.5-inc1, random erasing 0.25, EMA 0.99996.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
runner_type = 'SafeCheckpointRunner'  # crash-safe checkpoints (mmvssm.checkpoint)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
embed_dims = 192
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=24),
        img_size=224,
        patch_size=16,
        with_cls_token=True,
        final_norm=True,
        out_type='raw',
        out_indices=(23, ),
        drop_path_rate=0.0),
    head=dict(
        type='VimClsHead',
        num_classes=1000,
        in_channels=embed_dims,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1, eps=1e-8, betas=(0.9, 0.999)),
    # timm's add_weight_decay: no decay for 1-D tensors, biases and Vim's no_weight_decay() names;
    # A_log / A_b_log (2-D) are decayed, as in the official runs.
    paramwise_cfg=dict(
        flat_decay_mult=0.0, bias_decay_mult=0.0,
        custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]
# 8 GPUs x 128
auto_scale_lr = dict(base_batch_size=1024)
