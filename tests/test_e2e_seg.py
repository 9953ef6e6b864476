"""UperNet + Vim (reduced) end to end through tools/train.py and tools/test.py on the tiny ADE20K sample."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from PIL import Image

from conftest import NO_VAL, TINY_CONFIGS

from mmvssm.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.e2e
CONFIG = osp.join(TINY_CONFIGS, 'upernet_vim_tiny_tiny-ade.py')
# Vim at 32 channels x 4 layers, 64 px crops, 8 iterations: seconds on a CPU, still learns.
FAST = [
    'model.backbone.arch.embed_dims=32', 'model.backbone.arch.depth=4', 'model.backbone.img_size=64',
    'model.backbone.out_indices=(0,1,2,3)', 'model.decode_head.in_channels=[32,32,32,32]',
    'model.auxiliary_head.in_channels=32', 'model.decode_head.channels=16',
    'model.auxiliary_head.channels=16', 'model.data_preprocessor.size=(64,64)',
    'train_dataloader.batch_size=2', 'train_dataloader.dataset.pipeline.2.scale=(128,64)',
    'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
    'val_dataloader.dataset.pipeline.1.scale=(128,64)', 'test_dataloader.dataset.pipeline.1.scale=(128,64)',
    'param_scheduler.0.end=2', 'param_scheduler.1.begin=2', 'default_hooks.logger.interval=1',
    'optim_wrapper.optimizer.lr=0.003',
]


def schedule(max_iters: int, ckpt_interval: int) -> list:
    return [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
            f'param_scheduler.1.end={max_iters}', f'default_hooks.checkpoint.interval={ckpt_interval}']


def test_train_then_test(in_workspace, tools, tmp_path):
    work_dir = str(tmp_path / 'work')
    runner = tools['train'].main([CONFIG, '--work-dir', work_dir, '--cfg-options', *FAST, *schedule(8, 8),
                                  *NO_VAL])
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), f'loss did not decrease: {losses}'
    ckpt = osp.join(work_dir, 'iter_8.pth')
    assert osp.isfile(ckpt)

    out_dir, show_dir = tmp_path / 'pred', tmp_path / 'show'
    metrics = tools['test'].main([CONFIG, ckpt, '--work-dir', work_dir, '--out', str(out_dir),
                                  '--show-dir', str(show_dir), '--cfg-options', *FAST])
    assert {'mIoU', 'aAcc', 'mAcc'} <= set(metrics)
    assert 0 <= metrics['mIoU'] <= 100 and metrics['aAcc'] > 0
    # --out: mmseg's convention, one PNG of raw ADE20K labels (1..150) per validation image
    preds = sorted(glob.glob(str(out_dir / '*.png')))
    assert len(preds) == 4
    labels = np.asarray(Image.open(preds[0]))
    assert labels.shape == (64, 64) and labels.min() >= 1
    # --show-dir: a painted PNG per validation image
    assert len(glob.glob(str(show_dir / '**' / '*.png'), recursive=True)) == 4
    # --tta: the config's multi-scale + flip pipeline through mmseg's SegTTAModel
    tta = tools['test'].main([CONFIG, ckpt, '--work-dir', work_dir, '--tta', '--cfg-options', *FAST])
    assert {'mIoU', 'aAcc'} <= set(tta)


class SimulatedKill(Exception):
    pass


@HOOKS.register_module(force=True)
class KillTrainingAt(Hook):
    """Stops training abruptly after iteration ``at`` (1-based), like a killed job."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            raise SimulatedKill(f'killed after iteration {self.at}')


def test_resume_after_interruption(in_workspace, tools, tmp_path):
    """Killed at iteration 3 (last checkpoint: 2), ``--resume`` continues at 2 with optimizer and
    scheduler state and ends at the iteration count of an uninterrupted run; ``--resume CKPT`` with a
    larger max_iters continues from that file (not the newest) and trains on."""
    work_dir = str(tmp_path / 'work')
    args = [CONFIG, '--work-dir', work_dir, '--cfg-options', *FAST, *schedule(4, 2), *NO_VAL]
    with pytest.raises(SimulatedKill):
        tools['train'].main(args + ['default_hooks.kill.type=KillTrainingAt', 'default_hooks.kill.at=3'])
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth'))) == ['iter_2.pth']
    saved = load_checkpoint_file(osp.join(work_dir, 'iter_2.pth'))

    runner = tools['train'].main(args[:1] + ['--resume'] + args[1:])
    assert runner.iter == 4
    assert 'resumed epoch: 0, iter: 2' in read_log(runner)
    final = load_checkpoint_file(osp.join(work_dir, 'iter_4.pth'))
    assert final['meta']['iter'] == 4
    # AdamW's step counter continued from the checkpoint (a fresh optimizer would be at 2)
    assert {float(s['step']) for s in final['optimizer']['state'].values()} == {4.0}
    # the schedulers continued too: iteration counters, and the poly decay reached its end value
    assert [s['_global_step'] for s in saved['param_schedulers']] == [2, 2]
    assert [s['_global_step'] for s in final['param_schedulers']] == [4, 4]
    assert final['param_schedulers'][1]['_last_value'] == [pytest.approx(1e-5)]
    # the resumed run started from the checkpointed weights and trained them on
    key = 'backbone.patch_embed.proj.weight'
    assert not torch.equal(final['state_dict'][key], saved['state_dict'][key])

    runner = tools['train'].main([CONFIG, '--work-dir', work_dir, '--resume',
                                  osp.join(work_dir, 'iter_2.pth'), '--cfg-options', *FAST,
                                  *schedule(5, 5), *NO_VAL])
    assert runner.iter == 5 and 'resumed epoch: 0, iter: 2' in read_log(runner)
    longer = load_checkpoint_file(osp.join(work_dir, 'iter_5.pth'))
    assert {float(s['step']) for s in longer['optimizer']['state'].values()} == {5.0}


def read_log(runner) -> str:
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()
