# UperNet + EfficientVMamba-T, ADE20K 160k iterations, 512x512 crops, batch 16 (4 GPUs x 4).
# EfficientVMamba ships no segmentation config; the paper (Sec. 5.3) follows VMamba, whose UperNet
# configs inherit mmseg's Swin UperNet recipe: AdamW lr 6e-5, wd 0.01 (no decay on norms), 1500-iter
# linear warm-up, poly decay, drop_path 0.3. Paper: 38.9 mIoU (SS) / 39.3 (MS), 14M params.
_base_ = [
    './_base_/models/upernet.py', 'mmseg::_base_/datasets/ade20k.py',
    './_base_/default_runtime_seg.py', './_base_/schedules/seg_160k.py'
]
crop_size = (512, 512)
# Official ImageNet-1k weights (HF TerryPei/EfficientVMamba-Tiny); official or converted files both load.
# Set model.backbone.init_cfg=None to train from scratch (e.g. with a reduced arch).
pretrained = 'checkpoints/efficient_vmamba_tiny.ckpt'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='EfficientVMamba',
        arch=dict(dims=[48, 96, 192, 384], depths=[2, 2, 4, 2]),  # = arch 't'; a dict so overrides merge
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        frozen_stages=-1,
        norm_eval=False,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[48, 96, 192, 384], num_classes=150),
    auxiliary_head=dict(in_channels=192, num_classes=150))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # 'norm' matches every LayerNorm (norm, out_norm, outnorm{i}, se.norm, downsample.norm).
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
train_dataloader = dict(batch_size=4)
