"""Convert an official Vim checkpoint (hustvl/Vim) to an mmvssm / mmpretrain checkpoint.

    python tools/model_converters/vim2mmvssm.py vim_t_midclstok_76p1acc.pth vim_tiny_in1k.pth [--ema]

The output holds ``state_dict`` with ``backbone.*`` (official names) and ``head.fc.*`` keys: use it as
``load_from`` for ``configs/imagenet/vim_*_in1k.py`` or as ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` of a dense ``Vim`` backbone (the head is dropped and the position embedding is adapted
on loading). The official files store an ``argparse.Namespace`` (``args``); it is read with torch's
weights-only loader plus an allow-list (no arbitrary code), and only tensors are written out, so the
result loads with plain ``torch.load(weights_only=True)``. The file is written atomically.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmvssm.models.backbones.vim import official_to_classifier  # noqa: E402
from mmvssm.checkpoint import atomic_save, extract_state_dict, load_checkpoint_file  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert an official Vim checkpoint to mmvssm keys')
    parser.add_argument('src', help='official checkpoint (dict with `model`, maybe `model_ema`)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--ema', action='store_true', help='take the `model_ema` weights')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ckpt = load_checkpoint_file(args.src)
    if args.ema and not (isinstance(ckpt, dict) and 'model_ema' in ckpt):
        raise SystemExit(f'{args.src} has no `model_ema` entry; run without --ema')
    state = extract_state_dict(ckpt, prefer='model_ema' if args.ema else 'model')
    converted = official_to_classifier(state)
    meta = dict(source=osp.basename(args.src), converter='vim2mmvssm', ema=args.ema)
    atomic_save(dict(state_dict=converted, meta=meta), args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
