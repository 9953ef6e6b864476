"""Safe checkpoint reading, state-dict extraction and atomic writes (mmvssm.checkpoint)."""
import argparse
import os
import sys

import numpy as np
import pytest
import torch

from mmvssm.checkpoint import ENV_ALLOW_UNSAFE, atomic_save, extract_state_dict, load_checkpoint_file


class _CodeRunningObject:
    """Stands for an arbitrary pickled class: weights_only loading must refuse it."""

    def __init__(self):
        self.value = 3


def test_official_style_checkpoint_loads_safely(tmp_path):
    path = tmp_path / 'official.pth'
    torch.save({'model': {'w': torch.ones(2)}, 'args': argparse.Namespace(lr=1e-3),
                'epoch': 299, 'scaler': {'scale': np.float64(65536.0)}, 'hist': np.arange(4)}, path)
    ckpt = load_checkpoint_file(str(path))
    assert ckpt['args'].lr == 1e-3
    assert torch.equal(extract_state_dict(ckpt)['w'], torch.ones(2))


def test_mmengine_resume_checkpoint_loads_safely(tmp_path):
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.5)
    path = tmp_path / 'iter_4.pth'
    torch.save({'meta': {'iter': 4, 'seed': np.int64(7)}, 'state_dict': {'a': torch.zeros(1)},
                'message_hub': {'log_scalars': {'loss': buf}}}, path)
    ckpt = load_checkpoint_file(str(path))
    assert ckpt['message_hub']['log_scalars']['loss'].current() == 1.5


def test_official_yacs_config_loads_as_plain_dict(tmp_path, monkeypatch):
    # Official EfficientViM/EfficientVMamba trainers pickle a yacs CfgNode (a dict subclass with
    # attribute state); it must load without yacs and without trusting the class.
    import types
    yacs = types.ModuleType('yacs')
    yacs_config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__['__immutable__'] = True

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    yacs_config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', yacs_config)
    path = tmp_path / 'official_evim.pth'
    torch.save({'model': {'w': torch.ones(1)},
                'config': CfgNode(MODEL=CfgNode(NAME='EfficientViM_M1'), TRAIN=CfgNode(LR=2e-3))}, path)
    monkeypatch.delitem(sys.modules, 'yacs.config')
    monkeypatch.delitem(sys.modules, 'yacs')
    ckpt = load_checkpoint_file(str(path))
    assert ckpt['config']['MODEL']['NAME'] == 'EfficientViM_M1'
    assert type(ckpt['config']) is not CfgNode


def test_unsafe_checkpoint_refused_with_instructions(tmp_path, monkeypatch):
    path = tmp_path / 'unsafe.pth'
    torch.save({'obj': _CodeRunningObject(), 'model': {'w': torch.ones(1)}}, path)
    monkeypatch.delenv(ENV_ALLOW_UNSAFE, raising=False)
    with pytest.raises(RuntimeError, match=ENV_ALLOW_UNSAFE):
        load_checkpoint_file(str(path))
    assert load_checkpoint_file(str(path), allow_unsafe=True)['obj'].value == 3
    # the opt-in names the trusted file: another file stays refused, and `=1` (everything) is refused
    other = tmp_path / 'other.pth'
    torch.save({'obj': _CodeRunningObject()}, other)
    monkeypatch.setenv(ENV_ALLOW_UNSAFE, str(path))
    assert load_checkpoint_file(str(path))['obj'].value == 3
    with pytest.raises(RuntimeError, match='refuses'):
        load_checkpoint_file(str(other))
    monkeypatch.setenv(ENV_ALLOW_UNSAFE, '1')
    with pytest.raises(RuntimeError, match='name the trusted checkpoint'):
        load_checkpoint_file(str(path))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(RuntimeError, match='not a readable torch checkpoint'):
        load_checkpoint_file(str(bad))


@pytest.mark.parametrize('container', ['state_dict', 'model', 'model_ema', 'plain'])
def test_extract_state_dict_containers(container):
    weights = {'module.a': torch.ones(1), 'module.b': torch.zeros(2)}
    ckpt = weights if container == 'plain' else {container: weights, 'epoch': 3}
    assert sorted(extract_state_dict(ckpt)) == ['a', 'b']


def test_extract_state_dict_prefers_model_over_ema():
    ckpt = {'model': {'a': torch.ones(1)}, 'model_ema': {'a': torch.zeros(1)}}
    assert extract_state_dict(ckpt)['a'].item() == 1
    assert extract_state_dict(ckpt, prefer='model_ema')['a'].item() == 0
    with pytest.raises(RuntimeError, match='no tensors'):
        extract_state_dict({'epoch': 3})


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'ckpt.pth'
    atomic_save({'v': torch.ones(1)}, str(path))

    def failing_save(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt  # a kill in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_save({'v': torch.zeros(1)}, str(path), save_fn=failing_save)
    assert load_checkpoint_file(str(path))['v'].item() == 1
    assert os.listdir(tmp_path) == ['ckpt.pth']  # no temporary left behind


def test_atomic_save_gives_the_usual_file_mode(tmp_path):
    old_umask = os.umask(0o022)
    try:
        atomic_save({'v': torch.ones(1)}, str(tmp_path / 'ckpt.pth'))
    finally:
        os.umask(old_umask)
    assert os.stat(tmp_path / 'ckpt.pth').st_mode & 0o777 == 0o644


def test_mmengine_loader_reads_mmengine_checkpoints_safely(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    path = tmp_path / 'resume.pth'
    torch.save({'state_dict': {'a': torch.ones(1)}, 'meta': {'np': np.arange(2)}}, path)
    original = CheckpointLoader._schemes['']
    assert _load_checkpoint(str(path))['meta']['np'].tolist() == [0, 1]
    assert CheckpointLoader._schemes[''] is original  # loading swaps nothing


def test_empty_history_buffer_and_empty_array_load_through_mmengine(tmp_path):
    """Protocol 2 pickles the (empty) data of an empty numpy array as a call of `bytes`."""
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import _load_checkpoint
    path = tmp_path / 'iter_1.pth'
    torch.save({'meta': {'iter': 1, 'empty': np.array([])}, 'state_dict': {'a': torch.zeros(1)},
                'message_hub': {'log_scalars': {'loss': HistoryBuffer()}}}, path, pickle_protocol=2)
    ckpt = _load_checkpoint(str(path))
    assert ckpt['meta']['empty'].shape == (0, )
    assert len(ckpt['message_hub']['log_scalars']['loss'].data[0]) == 0
