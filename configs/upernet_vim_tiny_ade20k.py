# UperNet + Vim-Tiny on ADE20K, 512x512, 60k iterations (official seg/ recipe of hustvl/Vim).
# Pretrained weights: set `pretrained` to an official checkpoint (e.g. vim_t_midclstok_76p1acc.pth) or a
# tools/model_converters/vim2mmvssm.py output; the class token is dropped and pos_embed resized to 32x32.
_base_ = [
    '_base_/models/upernet.py', 'mmseg::_base_/datasets/ade20k.py',
    '_base_/default_runtime_seg.py', '_base_/schedules/seg_60k.py'
]
crop_size = (512, 512)
embed_dims = 192
pretrained = None
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='Vim',
        # a dict, so reduced models are one override away: model.backbone.arch.depth=4
        arch=dict(embed_dims=embed_dims, depth=24),
        img_size=512,
        patch_size=16,
        out_indices=(5, 11, 17, 23),
        with_cls_token=False,
        final_norm=False,
        drop_path_rate=0.1,
        pyramid_cfg=dict(norm_cfg=norm_cfg),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# AdamW with layer-wise lr decay 0.92 over the 24 Vim layers (our names: backbone.layers.{i}).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.92))

# 8 images per GPU x 4 GPUs = 32, as the official runs.
train_dataloader = dict(batch_size=8)
