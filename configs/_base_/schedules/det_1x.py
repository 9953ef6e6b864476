# mmdet's 1x schedule (12 epochs, lr x0.1 at epochs 8 and 11, 500-iteration warm-up) with AdamW instead of
# SGD: every mmvssm detector trains with AdamW; each config sets its lr and weight decay.
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
