"""Fault tests: a killed save loses at most one interval, a corrupt checkpoint is refused and the previous one
used, tools/test.py refuses weights that do not fit, bad data and bad hyper-parameters fail naming the problem.

The checkpoint tests train a two-parameter mmengine model with the Runner and CheckpointHook our configs
name (``SafeCheckpointRunner``, ``AtomicCheckpointHook``: mmengine's, extended through subclasses and a
registered file backend), so they take a second each.
"""
import os
import re
import shutil
import os.path as osp
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner

from conftest import TINY_CONFIGS

from mmvssm.checkpoint import SafeCheckpointRunner, find_resumable_checkpoint

SEG_CONFIG = osp.join(TINY_CONFIGS, 'upernet_vim_tiny_tiny-ade.py')
OTHER_SEG_CONFIG = osp.join(TINY_CONFIGS, 'upernet_efficient_vim_m1_tiny-ade.py')
DET_CONFIG = osp.join(TINY_CONFIGS, 'mask_rcnn_vim_tiny_tiny-coco.py')
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ---------------------------------------------------------------- a real run, small enough for a second
class Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.fc(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            targets = torch.stack(targets) if isinstance(targets, list) else targets
            return {'loss': ((out - targets) ** 2).mean()}
        return out


def toy_runner(work_dir: str, max_iters: int, resume: bool = False) -> Runner:
    data = [dict(inputs=torch.tensor([float(i), 1.0]), targets=torch.tensor([float(i)])) for i in range(8)]
    return SafeCheckpointRunner(
        model=Toy(), work_dir=work_dir, experiment_name=f'toy{time.time_ns()}',
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, by_epoch=False,
                                           max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume, default_scope='mmengine')


def test_failure_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """max_keep_ckpts=1: mmengine deletes iter_2 before writing iter_3; a failure mid-write lost both."""
    work_dir = str(tmp_path)
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        if obj['meta']['iter'] == 3:
            f.write(b'PK\x03\x04 half a checkpoint')
            raise KeyboardInterrupt('killed during the save of iter_3')
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', save_then_die)
    with pytest.raises(KeyboardInterrupt):
        toy_runner(work_dir, max_iters=5).train()
    monkeypatch.undo()
    assert sorted(f for f in os.listdir(work_dir) if f.endswith(('.pth', '.tmp'))) == ['iter_2.pth']
    resumed = toy_runner(work_dir, max_iters=5, resume=True)
    resumed.train()
    assert resumed.iter == 5
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.pth')) == ['iter_5.pth']


KILLED_CHILD = textwrap.dedent('''
    import os, sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_reliability import toy_runner
    real_replace = os.replace
    def slow_publish(src, dst):  # the bytes of iter_3 are in their temporary file, not yet renamed
        if dst.endswith('iter_3.pth'):
            open({marker!r}, 'w').close()
            time.sleep(600)
        return real_replace(src, dst)
    os.replace = slow_publish
    toy_runner({work_dir!r}, max_iters=5).train()
''')


def test_sigkill_during_save_loses_one_interval(tmp_path, subprocess_env):
    work_dir, marker = str(tmp_path / 'work'), str(tmp_path / 'writing')
    code = KILLED_CHILD.format(tests=osp.join(REPO, 'tests'), marker=marker, work_dir=work_dir)
    child = subprocess.Popen([sys.executable, '-c', code], env=subprocess_env, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not osp.exists(marker):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, 'the child never reached the save of iter_3'
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    left = sorted(os.listdir(work_dir))
    assert 'iter_2.pth' in left and any(f.endswith('.tmp') for f in left), left
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
    assert not any(f.endswith('.tmp') for f in os.listdir(work_dir))  # the half-written file is gone


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_iters=2).train()
    shutil.copy(osp.join(work_dir, 'iter_2.pth'), osp.join(work_dir, 'kept'))
    toy_runner(work_dir, max_iters=3, resume=True).train()  # max_keep_ckpts=1 deletes iter_2
    os.replace(osp.join(work_dir, 'kept'), osp.join(work_dir, 'iter_2.pth'))
    # the newest is damaged, as by a disk error or another writer
    with open(osp.join(work_dir, 'iter_3.pth'), 'r+b') as f:
        f.truncate(100)
    assert find_resumable_checkpoint(work_dir) == osp.join(work_dir, 'iter_2.pth')
    resumed = toy_runner(work_dir, max_iters=4, resume=True)
    resumed.train()
    assert resumed.iter == 4  # 2 resumed + 2 trained
    log = ''.join(open(osp.join(dp, f)).read() for dp, _, fs in os.walk(work_dir) for f in fs if f.endswith('.log'))
    assert 'refusing to resume from' in log and 'iter_3.pth' in log
    # nothing readable at all: an error, not a silent restart from iteration 0
    for name in ('iter_2.pth', 'iter_4.pth'):
        with open(osp.join(work_dir, name), 'wb') as f:
            f.write(b'garbage')
    with pytest.raises(RuntimeError, match='none of the checkpoints'):
        find_resumable_checkpoint(work_dir)


# ---------------------------------------------------------------- tools/test.py refuses wrong weights
def _model_state(config: str) -> dict:
    from mmengine.config import Config

    from dense_helpers import build_model
    cfg = Config.fromfile(config)
    return build_model(cfg.model, cfg.default_scope, init_weights=False).state_dict()


def test_tools_test_refuses_weights_that_do_not_fit(in_workspace, tools, tmp_path):
    other = tmp_path / 'other_model.pth'
    torch.save({'state_dict': _model_state(OTHER_SEG_CONFIG)}, other)
    with pytest.raises(SystemExit) as info:
        tools['test'].main([SEG_CONFIG, str(other), '--work-dir', str(tmp_path / 'w1')])
    assert info.value.code != 0 and 'does not fit' in str(info.value)
    own = _model_state(SEG_CONFIG)
    one = tmp_path / 'one_tensor.pth'
    name = 'backbone.patch_embed.proj.weight'
    torch.save({'state_dict': {name: own[name]}}, one)
    with pytest.raises(SystemExit) as info:
        tools['test'].main([SEG_CONFIG, str(one), '--work-dir', str(tmp_path / 'w2')])
    assert info.value.code != 0 and re.search(r'restored 1/\d+ tensors', str(info.value))
    # the model's own weights are evaluated
    good = tmp_path / 'own.pth'
    torch.save({'state_dict': own}, good)
    metrics = tools['test'].main([SEG_CONFIG, str(good), '--work-dir', str(tmp_path / 'w3')])
    assert 'mIoU' in metrics


# bad data fails at load, naming the file: tests/test_data_validation.py


# ---------------------------------------------------------------- hyper-parameters
def test_misspelt_key_and_negative_drop_path_are_refused(in_workspace, tools, tmp_path):
    for options, expected in ((['optim_wraper.type=OptimWrapper'], "did you mean 'optim_wrapper'"),
                              (['model.backbone.drop_path_rate=-0.1'], 'drop_path_rate=-0.1 is not a probability')):
        with pytest.raises(SystemExit) as info:
            tools['train'].main([SEG_CONFIG, '--work-dir', str(tmp_path), '--cfg-options', *options])
        assert expected in str(info.value)
