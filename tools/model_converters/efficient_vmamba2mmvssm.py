"""Convert an official EfficientVMamba checkpoint (TerryPei/EfficientVMamba) to mmvssm's layout.

* Classification checkpoints (``EfficientVSSM``, with ``classifier.*``; plain, ``module.``/EMA
  ``module.module.`` prefixed, in ``state_dict``/``model``/``ema_model`` containers) become mmpretrain
  ``ImageClassifier`` checkpoints for ``configs/imagenet/efficient_vmamba_*_in1k.py``:
  ``backbone.*``, ``backbone.outnorm{last}`` <- ``classifier.norm``, ``head.fc`` <- ``classifier.head``.
* Dense checkpoints (``Backbone_EfficientVSSM``, with ``outnorm{i}``) become backbone checkpoints
  (``backbone.*``) for ``init_cfg=dict(type='Pretrained', checkpoint=DST)``.

Official checkpoints also load directly through ``init_cfg``; converting once avoids re-mapping and
gives the classifier configs a ``load_from`` file.

Usage: python tools/model_converters/efficient_vmamba2mmvssm.py SRC DST [--ema]
"""
import argparse
from typing import Dict, List, Optional

from torch import Tensor

from mmvssm.models.backbones.efficient_vmamba import official_to_classifier
from mmvssm.checkpoint import atomic_save, extract_state_dict, load_checkpoint_file


def convert(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Official keys -> mmvssm model keys (``backbone.*`` and, for classifiers, ``head.fc.*``)."""
    return official_to_classifier(state_dict)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (.ckpt / .pth / .pth.tar)')
    parser.add_argument('dst', help='output file (written atomically)')
    parser.add_argument('--ema', action='store_true',
                        help='take the EMA weights (`ema_model`) of a full training checkpoint instead '
                             'of `model` (released .ckpt files already hold the EMA weights)')
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint_file(args.src)
    state = convert(extract_state_dict(checkpoint, prefer='ema_model' if args.ema else 'model'))
    atomic_save({'state_dict': state, 'meta': {'converted_from': args.src}}, args.dst)
    kind = 'classifier' if any(k.startswith('head.') for k in state) else 'backbone'
    print(f'converted {len(state)} tensors ({kind} layout) to {args.dst}')


if __name__ == '__main__':
    main()
