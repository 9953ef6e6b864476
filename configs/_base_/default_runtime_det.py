# mmdet's runtime, plus importing mmvssm (the backbones), keeping the last 3 checkpoints, and ValidateData
# (mmvssm.datasets): degenerate boxes and non-finite pixels are errors naming the file.
# A config that sets `custom_hooks` replaces this list: keep ValidateData in it.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
# mmvssm's Runner and CheckpointHook (mmvssm.checkpoint): atomic saves, pruning after the new file, resume
# from the newest readable checkpoint, the load policy; mmseg's/mmdet's own tools honour both.
runner_type = 'SafeCheckpointRunner'
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', max_keep_ckpts=3))
custom_hooks = [dict(type='ValidateData')]
