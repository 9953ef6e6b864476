# 60k iterations: seg_160k.py with the poly decay, validation and checkpoints rescaled.
_base_ = ['./seg_160k.py']
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=60000, by_epoch=False),
]
train_cfg = dict(max_iters=60000, val_interval=6000)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=6000))
