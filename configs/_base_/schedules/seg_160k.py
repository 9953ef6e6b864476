# mmseg's 160k-iteration schedule with what mmvssm's segmentation runs change: AdamW instead of SGD (each
# config sets its lr and weight decay), a 1500-iteration linear warm-up before a linear (power 1.0) poly
# decay, and the last 3 checkpoints kept.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']
optimizer = None  # mmseg's schedules name an SGD here; the optimizer is optim_wrapper's
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', max_keep_ckpts=3))
