# 1x detection schedule: 12 epochs, lr x0.1 at epochs 8 and 11, 500-iteration linear warm-up.
# The optimizer (AdamW etc.) is set by each model config.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
# LR is set for 16 images per iteration (8 GPUs x 2); enable with --auto-scale-lr style overrides.
auto_scale_lr = dict(enable=False, base_batch_size=16)
