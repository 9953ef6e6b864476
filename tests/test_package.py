"""The package as users meet it: imports beside the OpenMMLab stack, one registration per backbone."""
import subprocess
import sys

import pytest


def test_imports_cleanly_with_the_whole_stack():
    # A fresh interpreter: mmvssm must import beside mmdet, mmseg and mmpretrain, in either order.
    for code in ('import mmdet, mmseg, mmpretrain, mmvssm', 'import mmvssm, mmpretrain, mmseg, mmdet'):
        out = subprocess.run([sys.executable, '-W', 'error::SyntaxWarning', '-c', code],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr


@pytest.mark.parametrize('name', ['Vim', 'EfficientVMamba', 'EfficientViM'])
def test_each_backbone_registered_once_in_the_root_registry(name):
    import mmdet.registry
    import mmpretrain.registry
    import mmseg.registry
    from mmengine.registry import MODELS as ROOT

    import mmvssm  # noqa: F401
    assert name in ROOT.module_dict
    for child in (mmseg.registry.MODELS, mmdet.registry.MODELS, mmpretrain.registry.MODELS):
        assert name not in child.module_dict  # not copied into the children ...
        assert child.get(name) is ROOT.get(name)  # ... which still find it through their parent
