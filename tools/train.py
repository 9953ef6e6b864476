"""Train a segmentor (mmseg) or detector (mmdet) with an mmvssm backbone through mmengine's Runner.

The config's ``default_scope`` ('mmseg' or 'mmdet') decides which library's registries are used, so one
script serves both, shaped like mmseg's and mmdet's own ``tools/train.py``::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm]

``--resume`` without a path continues from the newest readable checkpoint in the work dir (model,
iteration, optimizer, scheduler, message hub and the random seed; the random number generators are
re-seeded from that seed, not continued, so a resumed run is not bit-identical to an uninterrupted one).
A checkpoint that cannot be read is refused with an error in the log and the previous one is used.
Checkpoints are written atomically and the one beyond ``max_keep_ckpts`` is deleted only after the new
one is complete, so a kill at any moment loses at most one checkpoint interval: the config's
``runner_type='SafeCheckpointRunner'`` and ``default_hooks.checkpoint.type='AtomicCheckpointHook'``
(:mod:`mmvssm.checkpoint.runner`, set by our runtime bases) do it, as in mmseg's/mmdet's own tools. Multi-process: ``tools/dist_train.sh`` (torchrun) or ``tools/slurm_train.sh``.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmvssm.checkpoint import WeightsMismatchError
from mmvssm.engine.launch import (ToolInputError, adapt_to_device, add_common_args, build_runner,
                                  check_data, check_model_types, load_config, parse_tool_args)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor or detector (mmvssm backbones)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models (default: '
                        'work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or without a value from the latest checkpoint in the '
                        'work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (CUDA only)')
    add_common_args(parser)
    return parse_tool_args(parser, argv)


def configure_amp(cfg, requested: bool) -> None:
    """``--amp``: switch to mmengine's AmpOptimWrapper, as mmseg/mmdet do; it needs CUDA."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if not torch.cuda.is_available() and (requested or wrapper == 'AmpOptimWrapper'):
        if requested:
            raise ToolInputError("--amp needs a CUDA device (mmengine's AmpOptimWrapper does not run on "
                                 "CPU); drop --amp to train in float32 on this machine")
        raise ToolInputError('the config trains with mixed precision (optim_wrapper.type='
                             "AmpOptimWrapper), which needs a CUDA device; on CPU add --cfg-options "
                             'optim_wrapper.type=OptimWrapper')
    if not requested:
        return
    if wrapper == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.', logger='current')
        return
    if wrapper != 'OptimWrapper':
        raise ToolInputError(f'--amp is only supported with optim_wrapper.type=OptimWrapper, the config '
                             f'uses {wrapper!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def main(argv: Optional[Sequence[str]] = None) -> Runner:
    """Train; returns the runner (its message hub holds the loss history)."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir)
        cfg.launcher = args.launcher
        adapt_to_device(cfg, args.launcher)
        configure_amp(cfg, args.amp)
        if args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume is not None:
            if not osp.isfile(args.resume):
                raise ToolInputError(f'--resume {args.resume!r}: no such checkpoint file; give the '
                                     f'path of an iter_*.pth/epoch_*.pth, or --resume alone to continue '
                                     f'from the newest checkpoint in the work dir')
            cfg.resume, cfg.load_from = True, args.resume
        check_data(cfg, ['train_dataloader', 'val_dataloader'])
        check_model_types(cfg)
    except ToolInputError as err:
        sys.exit(f'tools/train.py: error: {err}')

    runner = build_runner(cfg)
    try:
        runner.train()
    except WeightsMismatchError as err:  # load_from / --resume of a checkpoint of another model
        sys.exit(f'tools/train.py: error: {err}')
    return runner


if __name__ == '__main__':
    main()
