# UperNet + EfficientViM-M1, ADE20K 160k iterations, 512x512 crops, batch 16 (4 GPUs x 4).
# The official repo has no UperNet setup (its segmentation config is semantic FPN, see
# fpn_efficient_vim_m4_ade20k_40k.py); this uses mmseg's Swin UperNet recipe: AdamW lr 6e-5, wd 0.01,
# 1500-iter linear warm-up, poly decay. UPerHead fuses the three stages (strides 16/32/64) directly, so
# predictions are made at stride 16 as in the official semantic FPN; the auxiliary FCN head reads stage 1
# (stride 32, the penultimate stage like ResNet's C4). BatchNorm statistics frozen as in the official
# dense setups.
_base_ = [
    './_base_/models/upernet.py', 'mmseg::_base_/datasets/ade20k.py',
    './_base_/default_runtime_seg.py', './_base_/schedules/seg_160k.py'
]
crop_size = (512, 512)
# Official ImageNet-1k weights (mlvlab/EfficientViM README); official or converted files both load.
# Set model.backbone.init_cfg=None to train from scratch (e.g. with a reduced arch).
pretrained = 'checkpoints/EfficientViM_M1_e450.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='EfficientViM',
        arch='m1',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 192, 320], in_index=[0, 1, 2], num_classes=150),
    auxiliary_head=dict(in_channels=192, in_index=1, num_classes=150))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
train_dataloader = dict(batch_size=4)
