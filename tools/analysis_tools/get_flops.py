"""Parameters and FLOPs (multiply-adds) of a model or its backbone.

Examples::

    python tools/analysis_tools/get_flops.py configs/imagenet/efficient_vmamba_t_in1k.py
    python tools/analysis_tools/get_flops.py configs/imagenet/efficient_vim_m4_in1k.py --shape 256 256
    python tools/analysis_tools/get_flops.py CONFIG --backbone-only --shape 512 512

Works for mmpretrain classifiers, mmseg segmentors and mmdet detectors (called in ``mode='tensor'``).
The counting rule (one multiply-add = one FLOP; selective scan = 9*B*L*D*N + D-skip + z-gate; fused
attention = its two matmuls; element-wise ops free) is documented in ``mmvssm/utils/flops.py`` and
``docs/benchmarks.md``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from mmvssm.utils.flops import (DEFAULT_SCAN_FLOPS_PER_ELEMENT, FlopCount,  # noqa: E402
                                build_model_from_cfg, count_flops, default_input_shape)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count the parameters and FLOPs of a model')
    parser.add_argument('config', help='model config file (mmpretrain, mmseg or mmdet)')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H W (one value: square); default: the test crop of the config, '
                        'else 224')
    parser.add_argument('--backbone-only', action='store_true', help='count model.backbone only')
    parser.add_argument('--scan-flops-per-element', type=float,
                        default=DEFAULT_SCAN_FLOPS_PER_ELEMENT,
                        help='FLOPs per (b, l, d, n) element of the selective scan (Mamba/VMamba: 9)')
    parser.add_argument('--depth', type=int, default=1,
                        help='depth of the per-module breakdown to print (0: none)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    return parser.parse_args(argv)


def _shape(args: argparse.Namespace, cfg: Config) -> Tuple[int, int]:
    if args.shape is None:
        return default_input_shape(cfg)
    if len(args.shape) == 1:
        return args.shape[0], args.shape[0]
    if len(args.shape) == 2:
        return args.shape[0], args.shape[1]
    raise ValueError(f'--shape takes H W or one size, got {args.shape}')


def _fmt(count: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(count) >= scale:
            return f'{count / scale:.3f}{unit}'
    return str(int(count))


def report(result: FlopCount, title: str, depth: int = 1) -> str:
    """A plain-text summary: totals, breakdown by operator and by module (``depth`` levels)."""
    lines = ['=' * 72, title, f'Params: {_fmt(result.params)} ({result.params:,})',
             f'FLOPs:  {_fmt(result.flops)} ({result.flops:,}) multiply-adds',
             f'  of which selective scan: {_fmt(result.scan_flops)} in {result.scan_calls} calls',
             '-' * 72, 'By operator:']
    for name, count in result.by_operator.most_common():
        lines.append(f'  {name:<40} {_fmt(count):>10} {100 * count / max(result.flops, 1):6.1f}%')
    if depth > 0:
        lines += ['By module:']
        for name, count in result.by_module.items():
            if name and name.count('.') < depth and count:
                lines.append(f'  {name:<40} {_fmt(count):>10} {100 * count / max(result.flops, 1):6.1f}%')
    if result.unsupported:
        lines += ['Not counted (no handler): ' + ', '.join(
            f'{name} x{n}' for name, n in result.unsupported.most_common())]
    lines.append('=' * 72)
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> FlopCount:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    height, width = _shape(args, cfg)
    model = build_model_from_cfg(cfg)
    if args.backbone_only:
        if not hasattr(model, 'backbone'):
            raise ValueError(f'--backbone-only: {type(model).__name__} has no `backbone`')
        model = model.backbone
    inputs = torch.randn(1, 3, height, width)
    result = count_flops(model, inputs, scan_flops_per_element=args.scan_flops_per_element)
    what = 'backbone of ' if args.backbone_only else ''
    print(report(result, f'{what}{osp.basename(args.config)} at input (1, 3, {height}, {width})',
                 args.depth))
    return result


if __name__ == '__main__':
    main()
