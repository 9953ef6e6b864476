# mmseg's runtime, plus what every mmvssm segmentation config needs: importing mmvssm (the backbones), and
# ValidateData (mmvssm.datasets): out-of-range labels and non-finite pixels are errors naming the file.
# A config that sets `custom_hooks` replaces this list: keep ValidateData in it.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
# mmvssm's Runner and CheckpointHook (mmvssm.checkpoint): atomic saves, pruning after the new file, resume
# from the newest readable checkpoint, the load policy; mmseg's/mmdet's own tools honour both.
runner_type = 'SafeCheckpointRunner'
# (mmseg keeps default_hooks in its schedules: ours, _base_/schedules/seg_*.py, name AtomicCheckpointHook)
custom_hooks = [dict(type='ValidateData')]
