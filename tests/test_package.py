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


# ------------------------------------------------------------------ what each part needs installed
TOOLBOXES = ('mmcv', 'mmseg', 'mmdet', 'mmpretrain')
BLOCK = '''
import sys
for name in {names!r}:
    sys.modules[name] = None  # `import name` now fails as if name were not installed
'''
# mmpretrain installed but failing to import, as 1.2.0 does next to transformers >= 4.50
BREAK_MMPRETRAIN = '''
import importlib.abc, sys
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'mmpretrain':
            raise ImportError("cannot import name 'GenerationMixin' from 'transformers'")
sys.meta_path.insert(0, Broken())
'''
BUILD_VIM = '''
import torch
import mmvssm
from mmengine.registry import MODELS
vim = MODELS.build(dict(type='Vim', arch=dict(embed_dims=16, depth=2), img_size=32, out_indices=(1,),
                        scan_backend='reference'))
with torch.no_grad():
    print('outputs', [tuple(o.shape) for o in vim(torch.randn(1, 3, 32, 32))])
'''


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)


def test_backbones_need_only_torch_and_mmengine():
    code = BLOCK.format(names=TOOLBOXES) + BUILD_VIM + '''
import mmvssm.models.heads as heads
for name, needs in (('VimClsHead', 'mmpretrain'), ('EfficientViMFusionHead', 'mmpretrain'),
                    ('EfficientViMFPN', 'mmcv')):
    try:  # registered as a placeholder that says what is missing
        MODELS.build(dict(type=name, num_classes=2, in_channels=16))
    except ImportError as err:
        assert f'{needs} is not installed' in str(err) and 'install' in str(err).split(';')[1], err
    else:
        raise AssertionError(f'{name} built without {needs}')
try:
    from mmvssm.models.heads import VimClsHead
except ImportError as err:
    assert 'mmvssm.models.heads.VimClsHead is unavailable: mmpretrain is not installed' in str(err), err
else:
    raise AssertionError('VimClsHead imported without mmpretrain')
assert not hasattr(heads, 'nonexistent')
'''
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'outputs [(1, 16, 8, 8)]' in out.stdout
    assert 'Warning' not in out.stderr  # a toolbox that is absent is expected, not reported


def test_broken_mmpretrain_is_reported_not_fatal():
    code = BREAK_MMPRETRAIN + BUILD_VIM + '''
try:
    MODELS.build(dict(type='VimClsHead', num_classes=2, in_channels=16))
except ImportError as err:
    assert 'mmpretrain is installed but fails to import' in str(err) and 'transformers' in str(err), err
else:
    raise AssertionError('VimClsHead built with a broken mmpretrain')
'''
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'outputs [(1, 16, 8, 8)]' in out.stdout
    assert 'mmvssm: mmpretrain is installed but fails to import' in out.stderr  # said once, at import


def test_ops_need_only_torch():
    code = BLOCK.format(names=('mmengine', 'torchvision') + TOOLBOXES) + '''
import torch
import mmvssm.ops
from mmvssm.ops import selective_scan
u, delta = torch.randn(1, 4, 5), torch.rand(1, 4, 5)
A, B, C = -torch.rand(4, 3), torch.randn(1, 3, 5), torch.randn(1, 3, 5)
print('scan', tuple(selective_scan(u, delta, A, B, C, backend='reference').shape))
try:
    import mmvssm.models
except ModuleNotFoundError as err:
    assert err.name.split('.')[0] == 'mmengine', err
else:
    raise AssertionError('mmvssm.models imported without mmengine')
'''
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert 'scan (1, 4, 5)' in out.stdout


def test_utils_know_no_model():
    # The floors: mmvssm/utils/ (the one loader among them) imports nothing from the floors above and
    # keys nothing by our model class names; each model plugs its checkpoint layout in from its own file
    # (convert_checkpoint, convert_classifier_checkpoint, fresh_key_prefixes).
    import ast
    import inspect
    import pathlib

    import mmvssm.utils
    from mmvssm.models import backbones, heads, necks
    ours = {name for module in (backbones, backbones.base, heads, necks) for name, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__.startswith('mmvssm.models')}
    assert {'Vim', 'EfficientViM', 'EfficientVMamba', 'SSMBackbone', 'EfficientViMFPN'} <= ours
    for path in pathlib.Path(mmvssm.utils.__file__).parent.glob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [('.' * node.level) + (node.module or '')]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = []
            for name in names:
                assert not name.startswith(('mmvssm.models', 'mmvssm.engine', '..')), (path.name, name)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ours, (path.name, node.value)
