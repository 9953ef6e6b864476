# Shared base of the ready-to-run tiny UperNet configs (not runnable itself: no backbone): the generated
# tiny ADE20K sample, narrow heads and a 250-iteration schedule, so 2 CPU cores train it in minutes.
# Each configs/tiny/upernet_<backbone>_tiny-ade.py sets a reduced backbone and the head in_channels.
_base_ = [
    '../_base_/models/upernet.py', '../_base_/datasets/ade20k_tiny.py',
    '../_base_/default_runtime_seg.py', '../_base_/schedules/seg_40k.py'
]
crop_size = (96, 96)
norm_cfg = dict(type='BN', requires_grad=True)  # single CPU process; SyncBN needs GPUs
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(channels=64, pool_scales=(1, 2, 3), norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, norm_cfg=norm_cfg))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=25),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, begin=25, end=250, by_epoch=False),
]
train_cfg = dict(max_iters=250, val_interval=250)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(interval=50, max_keep_ckpts=2))
randomness = dict(seed=0)
