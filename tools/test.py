"""Evaluate a checkpoint through mmengine's Runner: mIoU/aAcc (mmseg IoUMetric) or box/mask AP (CocoMetric).

The config's ``default_scope`` ('mmseg' or 'mmdet') decides the task, as in ``tools/train.py``::

    python tools/test.py CONFIG CKPT [--work-dir DIR] [--out OUT] [--show-dir DIR] [--tta]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm]

The checkpoint must fit the model: unless every tensor of the model is restored from it
(``--min-restored`` lowers the fraction), none has another shape, none is NaN/Inf, none is left unused
under the model's own module names (another arch of the same family) and, for a file our
``AtomicCheckpointHook`` wrote, every tensor still matches the checksum stored with it, the tool exits
with status 1 instead of printing metrics of wrong weights. The rule travels as the runner's
``load_policy`` (:class:`mmvssm.checkpoint.LoadPolicy`).

``--out`` follows each library's tool: segmentation writes the predicted label maps as PNG into the
folder OUT (mmseg, raw ADE20K label values); detection dumps the predictions into the pickle file OUT
(mmdet's DumpDetResults). ``--show-dir DIR`` writes the visualised predictions as PNG under
``DIR/vis_data/vis_image/``.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, Optional, Sequence

from mmengine.config import Config, ConfigDict

from mmvssm.checkpoint import WeightsMismatchError
from mmvssm.engine.launch import (ToolInputError, adapt_to_device, add_common_args, build_runner,
                                  check_data, check_model_types, load_config, parse_tool_args)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor or detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the logs and metrics (default: '
                        'work_dirs/<config name>)')
    parser.add_argument('--out', help='segmentation: folder for the predicted label maps (PNG); '
                        'detection: pickle file for the predictions')
    parser.add_argument('--show-dir', help='folder for the visualised predictions (PNG)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (the config\'s '
                        'tta_pipeline and tta_model)')
    parser.add_argument('--min-restored', type=float, default=1.0, metavar='FRACTION',
                        help='refuse to evaluate unless this fraction of the model\'s tensors come from '
                        'the checkpoint (default 1.0: all of them); tensors of another shape are always '
                        'refused')
    add_common_args(parser)
    return parse_tool_args(parser, argv)


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Draw every test prediction and save it through the visualizer's LocalVisBackend as PNG."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ToolInputError('--show-dir needs a visualization hook in default_hooks (mmseg: '
                             'SegVisualizationHook, mmdet: DetVisualizationHook)')
    hook['draw'] = True
    hook['interval'] = 1  # mmseg draws every 50th image by default
    cfg.visualizer['save_dir'] = osp.abspath(show_dir)
    # A fixed name would reuse an existing visualizer (and its save_dir) when main() runs in-process
    # after a training; the runner then names it after this run.
    cfg.visualizer.pop('name', None)


def enable_tta(cfg: Config) -> None:
    """Wrap the model in the config's tta_model and test with its tta_pipeline (as mmseg/mmdet do)."""
    roi_head = cfg.model.get('roi_head') or {}
    if cfg.default_scope == 'mmdet' and roi_head.get('mask_head') is not None:
        raise ToolInputError('--tta: mmdet 3.3 has no test-time augmentation for instance masks '
                             '(DetTTAModel merges boxes only); test without --tta')
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise ToolInputError('--tta needs `tta_model` and `tta_pipeline` in the config (see mmseg\'s '
                             '_base_/datasets/ade20k.py and default_runtime.py)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    dataset.pipeline = cfg.tta_pipeline


def check_runner_applies_policy(cfg: Config) -> None:
    """The refusals travel as ``load_policy``, which only SafeCheckpointRunner (and subclasses) apply."""
    from mmengine.registry import RUNNERS

    from mmvssm.checkpoint import SafeCheckpointRunner
    runner_cls = RUNNERS.get(cfg.runner_type)
    if runner_cls is not None and not issubclass(runner_cls, SafeCheckpointRunner):
        raise ToolInputError(f'runner_type={cfg.runner_type!r} does not apply the checks of the weights '
                             f'(load_policy): derive it from mmvssm.checkpoint.SafeCheckpointRunner, or '
                             f"test with runner_type='SafeCheckpointRunner'")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Run the test loop; returns the metrics (also logged and written to the work dir)."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir)
        cfg.launcher = args.launcher
        adapt_to_device(cfg, args.launcher)
        if not 0 < args.min_restored <= 1:
            raise ToolInputError(f'--min-restored {args.min_restored}: give a fraction in (0, 1]')
        if not osp.isfile(args.checkpoint):
            raise ToolInputError(f'checkpoint {args.checkpoint!r} not found; pass the .pth written by '
                                 f'tools/train.py (work_dirs/<config name>/iter_N.pth)')
        cfg.load_from = args.checkpoint
        # a metric is only printed for the weights of the checkpoint (SafeCheckpointRunner applies it)
        cfg.setdefault('runner_type', 'SafeCheckpointRunner')
        cfg.load_policy = dict(cfg.get('load_policy') or {}, min_restored=args.min_restored,
                               allow_mismatch=False, finite=True, own_unused=True)
        if args.show_dir:
            enable_visualization(cfg, args.show_dir)
        if args.tta:
            enable_tta(cfg)
        dump_file = None
        if args.out and cfg.default_scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = args.out
        elif args.out:
            if not args.out.endswith(('.pkl', '.pickle')):
                raise ToolInputError(f'--out {args.out!r}: detection predictions are dumped as a pickle '
                                     f'file; give a name ending in .pkl')
            dump_file = args.out
        check_data(cfg, ['test_dataloader'])
        check_model_types(cfg)
        check_runner_applies_policy(cfg)
    except ToolInputError as err:
        sys.exit(f'tools/test.py: error: {err}')

    runner = build_runner(cfg)
    if dump_file is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=dump_file))
    try:
        return runner.test()
    except WeightsMismatchError as err:  # the refusal names the file and the tensors
        sys.exit(f'tools/test.py: error: {args.checkpoint} does not fit {args.config}: {err}')


if __name__ == '__main__':
    main()
