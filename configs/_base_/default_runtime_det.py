# mmdet's runtime, plus importing mmvssm (the backbones) and keeping the last 3 checkpoints.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
