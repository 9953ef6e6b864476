# Plug-in example (mmseg): mmseg's OWN ViT UperNet and ADE20K files, with Vim-Small swapped in for ViT-B.
# Nothing of this repository is inherited; `custom_imports` is all it takes to find `type='Vim'`. Copy it
# into your mmseg project and train with mmseg's tools/train.py (or mmvssm's, they are the same Runner).
# What differs from mmseg's vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py, and why:
#   * `pretrained=None`: mmseg's model base names a ViT file and EncoderDecoder hands it to the backbone
#     as `pretrained=`; our backbones take weights only through `init_cfg` (they convert official files);
#   * `multi_scale=False`: Vim returns its four layers as plain stride-16 maps, which is what mmseg's
#     MultiLevelNeck (scales 4/2/1/0.5 -> strides 4/8/16/32) expects. Vim's default (its own pyramid,
#     strides 4/8/16/32) through this neck would give strides 1/4/16/64;
#   * every 768 (ViT-B width) becomes 384 (Vim-Small width): neck in/out, decode and auxiliary heads;
#   * `data_preprocessor.size=crop_size`: mmseg's model base sets neither `size` nor `size_divisor` and
#     mmseg's training batches need exactly one of them;
#   * `NeckWiringCheckHook` (from mmvssm): before the first iteration it runs the backbone once and stops
#     the run with the fix if the neck/heads do not match the backbone's channels and strides;
#   * `ValidateData` (from mmvssm): out-of-range labels and non-finite pixels stop the run naming the file
#     (mmseg would leave such labels out of the loss and mIoU silently).
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
embed_dims = 384
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=dict(embed_dims=embed_dims, depth=24),  # = arch 'small'; a dict so overrides merge
        img_size=224,
        patch_size=16,
        out_indices=(5, 11, 17, 23),
        multi_scale=False,
        drop_path_rate=0.1,
        # official ImageNet weights (vim_s_midclstok_80p5acc.pth), converted on loading:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/vim_s_midclstok_80p5acc.pth'),
    ),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=150))
custom_hooks = [dict(type='NeckWiringCheckHook'), dict(type='ValidateData')]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'pos_embed': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
