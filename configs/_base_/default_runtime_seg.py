# mmseg's runtime, plus what every mmvssm segmentation config needs: importing mmvssm (the backbones).
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmvssm'], allow_failed_imports=False)
