"""Convert an official EfficientViM checkpoint (mlvlab/EfficientViM) to mmvssm/mmpretrain layout.

The output holds ``state_dict`` with ``backbone.*`` (EfficientViM) and ``head.*`` (EfficientViMFusionHead)
keys, so it loads into the classifier configs (``configs/imagenet/efficient_vim_*``) with tools/test.py
or ``load_from``, and its backbone part into any dense config (``init_cfg=dict(type='Pretrained', ...)``
strips the ``backbone.`` prefix). Usage::

    python tools/model_converters/efficient_vim2mmvssm.py EfficientViM_M4_e450.pth m4.pth [--ema]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmvssm.models.backbones.efficient_vim import official_to_classifier  # noqa: E402
from mmvssm.checkpoint import atomic_save, extract_state_dict, load_checkpoint_file  # noqa: E402


def convert(checkpoint: dict, use_ema: bool = False) -> dict:
    """Official checkpoint dict (``model``/``model_ema`` envelope or a bare state dict) -> mmvssm one."""
    if use_ema and 'model_ema' not in checkpoint:
        raise ValueError('--ema given but the checkpoint has no `model_ema` entry '
                         f'(it has {sorted(checkpoint)[:10]})')
    state = extract_state_dict(checkpoint, prefer='model_ema' if use_ema else 'model')
    converted = official_to_classifier(state)
    return {'state_dict': converted,
            'meta': {'source': 'mlvlab/EfficientViM', 'weights': 'model_ema' if use_ema else 'model',
                     'distilled': any(k.startswith('heads_dist.') for k in state)}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output file (written atomically)')
    parser.add_argument('--ema', action='store_true',
                        help='use the EMA weights (`model_ema`; they give the paper top-1) instead of `model`')
    parser.add_argument('--allow-unsafe', action='store_true',
                        help='official files store their yacs training config, which the safe loader '
                             'refuses; allow full unpickling (only for files from a trusted source)')
    args = parser.parse_args(argv)
    out = convert(load_checkpoint_file(args.src, allow_unsafe=args.allow_unsafe or None), use_ema=args.ema)
    atomic_save(out, args.dst)
    print(f'wrote {len(out["state_dict"])} tensors to {args.dst} (weights: {out["meta"]["weights"]}, '
          f'distilled: {out["meta"]["distilled"]})')


if __name__ == '__main__':
    main()
