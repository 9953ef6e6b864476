# UperNet + Vim-Tiny on ADE20K, 512x512, 60k iterations: the official run as it actually ran (hustvl/Vim
# seg/configs/vim/upernet/upernet_vim_tiny_24_512_slide_60k.py with the overrides of
# seg/scripts/ft_vim_tiny_upernet.sh, which win over the config). Field by field with sources:
# docs/recipes.md. Corrected layer decay: upernet_vim_tiny_ade20k_per-layer-decay.py.
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
        feature='mixer',  # official use_residual_as_feature=False: the raw mixer outputs
        rope=False,  # if_rope=False, if_rope_residual=False
        rope_residual=False,
        residual_in_fp32=False,  # official Tiny config (the run itself was fp32: use_fp16=False)
        drop_path_rate=0.1,  # VisionMamba's default (the config does not set it)
        pyramid_cfg=dict(norm_cfg=norm_cfg),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims, num_classes=150),
    auxiliary_head=dict(in_channels=embed_dims, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# AdamW lr 2e-4, wd 0.1 (script overrides of the config's 1e-4 / 0.05); "layer decay 0.92" as it applied:
# the official constructor looks for backbone.blocks.*, so only pos_embed/patch_embed get 0.92**25, every
# layer and both heads x1; no weight decay for 1-D tensors and biases only (pos_embed, A_log decayed).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.92, preset='vim_seg_as_run'))
# mmcv's poly with linear warm-up: lr(t) = base * (1 - t / 60000) * (1e-6 + (1 - 1e-6) * t / 1500) for
# t < 1500, then the poly alone: the warm-up multiplies the poly of the whole run (which does not restart),
# so both schedulers start at 0; mmengine's schedulers reach their end value at `end - 1`, hence the +1.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=60001, by_epoch=False),
]
# official schedule_60k.py: evaluate and save every 1000 iterations, keep 4, keep the best mIoU
train_cfg = dict(max_iters=60000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000, max_keep_ckpts=4, save_best='mIoU'))
# 8 images per GPU x 4 GPUs = 32, as the official runs.
train_dataloader = dict(batch_size=8)
# the scripts' --seed 0; their --deterministic (mmcv 1.x: cudnn flags only) is not carried over: mmengine's
# deterministic=True also calls torch.use_deterministic_algorithms, which UperNet's upsampling backward
# does not support on CUDA
randomness = dict(seed=0)
