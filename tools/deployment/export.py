"""Export a model's backbone (or the whole model) and check the exported one against eager PyTorch.

    python tools/deployment/export.py CONFIG [--checkpoint PTH] --format {torch_export,onnx} \\
        [--shape H W] [--scope {backbone,model}] [--out FILE] [--tolerance 1e-3]

* ``torch_export``: ``torch.export.export`` -> ``torch.export.save`` (``.pt2``). The scans stay opaque
  ``torch.ops.mmvssm.*`` operators, so running the file needs ``import mmvssm`` (which registers them) and
  keeps the fast backend of the machine it runs on.
* ``onnx``: the same capture with every ``mmvssm`` op decomposed into plain torch ops (the recurrence
  in blocks of 16 steps, :func:`mmvssm.ops.custom_ops.decompositions`) and exported by ``torch.onnx``'s
  dynamo exporter; checked with onnxruntime. Needs ``pip install onnx onnxscript onnxruntime``.

``--scope model`` exports ``model(x, mode='tensor')``: segmentors (EncoderDecoder) export whole; two-stage
detectors need image metas in that mode and are refused with a pointer to ``--scope backbone``.

The exported program is reloaded from ``--out`` and run on the same random input as the eager model; the
max absolute and relative (to the largest eager magnitude) difference of every output is printed. The exit
code is 1 when any relative difference exceeds ``--tolerance``, 2 for a usage error (missing package, bad
config).
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

FORMATS = ('torch_export', 'onnx')
SUFFIX = {'torch_export': '.pt2', 'onnx': '.onnx'}


class UsageError(RuntimeError):
    """Something the user must fix (exit code 2)."""


class TensorMode(nn.Module):
    """A whole OpenMMLab model as a function of the image tensor: ``model(x, mode='tensor')``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor):
        return self.model(x, mode='tensor')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('--checkpoint', help='weights to load (default: the config\'s initialisation)')
    parser.add_argument('--format', choices=FORMATS, default='torch_export')
    parser.add_argument('--shape', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='input image size (default: the config\'s crop_size, else 224 224)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the example input')
    parser.add_argument('--scope', choices=('backbone', 'model'), default='backbone',
                        help='export the backbone (default) or the whole model in tensor mode')
    parser.add_argument('--out', help='output file (default: work_dirs/export/<config>.<scope>{.pt2,.onnx})')
    parser.add_argument('--tolerance', type=float, default=1e-3,
                        help='largest accepted max|exported - eager| / max|eager| (default 1e-3)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-onnx-optimize', action='store_true',
                        help='skip torch.onnx\'s graph optimisation (about twice as fast to export)')
    return parser.parse_args(argv)


def build(config: str, checkpoint: Optional[str], scope: str) -> Tuple[nn.Module, object]:
    """The model (or its backbone) in eval mode, with the checkpoint's weights when given."""
    from mmengine.config import Config

    from mmvssm.checkpoint import extract_state_dict, load_checkpoint_file
    from mmvssm.utils.flops import build_model_from_cfg
    if not osp.isfile(config):
        raise UsageError(f'config {config!r} not found')
    cfg = Config.fromfile(config)
    model = build_model_from_cfg(cfg)
    if checkpoint is not None:
        state = extract_state_dict(load_checkpoint_file(checkpoint))
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise UsageError(f'{checkpoint!r} does not fit {type(model).__name__}: {len(result.missing_keys)} '
                             f'weights missing, e.g. {result.missing_keys[:3]}; is it this config\'s checkpoint?')
    if scope == 'backbone':
        if not hasattr(model, 'backbone'):
            raise UsageError(f'{type(model).__name__} has no `backbone`; use --scope model')
        model = model.backbone
    else:
        model = TensorMode(model)
    return model.eval(), cfg


def input_shape(cfg, shape: Optional[Sequence[int]]) -> Tuple[int, int]:
    if shape is not None:
        return int(shape[0]), int(shape[1])
    crop = cfg.get('crop_size')
    return (int(crop[0]), int(crop[1])) if crop else (224, 224)


def flat_tensors(out) -> List[Tensor]:
    leaves, _ = torch.utils._pytree.tree_flatten(out)
    return [t for t in leaves if isinstance(t, Tensor)]


def run_eager(model: nn.Module, x: Tensor, scope: str):
    try:
        return model(x)
    except Exception as err:
        if scope != 'model':
            raise
        # e.g. two-stage detectors, whose tensor mode still needs image metas
        raise UsageError(f'{type(model.model).__name__} does not run as a function of the image tensor alone '
                         f'({type(err).__name__}: {err}); export its backbone with --scope backbone') from err


def capture(model: nn.Module, x: Tensor) -> 'torch.export.ExportedProgram':
    try:
        return torch.export.export(model, (x, ))
    except Exception as err:
        raise RuntimeError(f'torch.export of {type(model).__name__} failed: {type(err).__name__}: '
                           f'{str(err).strip().splitlines()[0]}') from err


def export_torch(model: nn.Module, x: Tensor, out: str) -> List[Tensor]:
    """Export, save, reload and run; returns the reloaded program's outputs."""
    torch.export.save(capture(model, x), out)
    with torch.no_grad():
        return flat_tensors(torch.export.load(out).module()(x))


def export_onnx(model: nn.Module, x: Tensor, out: str, optimize: bool = True) -> List[Tensor]:
    """Export with the scans decomposed, write ``out``, run it with onnxruntime."""
    from mmvssm.ops.custom_ops import decompositions
    missing = [name for name in ('onnx', 'onnxscript', 'onnxruntime') if not _importable(name)]
    if missing:
        raise UsageError(f'--format onnx needs {", ".join(missing)}: pip install onnx onnxscript onnxruntime')
    import onnxruntime
    program = capture(model, x).run_decompositions(decompositions())
    left = sorted({str(n.target) for n in program.graph.nodes if str(n.target).startswith('mmvssm.')})
    if left:  # never hand the ONNX exporter an op it would have to guess
        raise RuntimeError(f'mmvssm ops left after decomposition: {left}')
    torch.onnx.export(program, (x, ), out, dynamo=True, external_data=False, verbose=False, optimize=optimize)
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])
    feeds = {session.get_inputs()[0].name: x.numpy()}
    return [torch.from_numpy(a) for a in session.run(None, feeds)]


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def compare(eager: List[Tensor], exported: List[Tensor]) -> float:
    """Prints the max abs / rel difference of each output; returns the largest relative one."""
    if len(eager) != len(exported):
        raise RuntimeError(f'the exported program returns {len(exported)} tensors, eager {len(eager)}')
    worst = 0.0
    for i, (a, b) in enumerate(zip(eager, exported)):
        if a.shape != b.shape:
            raise RuntimeError(f'output {i}: exported shape {tuple(b.shape)} != eager {tuple(a.shape)}')
        diff = (a.double() - b.double()).abs()
        finite = bool(torch.isfinite(b).all())
        abs_err = diff.max().item() if diff.numel() else 0.0
        rel_err = abs_err / max(a.double().abs().max().item(), 1e-12) if finite else float('inf')
        worst = max(worst, rel_err)
        print(f'output {i} {tuple(a.shape)}: max abs diff {abs_err:.3e}, max rel diff {rel_err:.3e}'
              + ('' if finite else ' (non-finite values in the exported output)'))
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        model, cfg = build(args.config, args.checkpoint, args.scope)
        height, width = input_shape(cfg, args.shape)
        out = args.out or osp.join('work_dirs', 'export', osp.splitext(osp.basename(args.config))[0]
                                   + f'.{args.scope}{SUFFIX[args.format]}')
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        torch.manual_seed(args.seed)
        x = torch.randn(args.batch, 3, height, width)
        with torch.no_grad():
            eager = flat_tensors(run_eager(model, x, args.scope))
        if args.format == 'torch_export':
            exporter = export_torch
        else:
            def exporter(model, x, path):
                return export_onnx(model, x, path, optimize=not args.no_onnx_optimize)
        # Written next to the target and renamed, so a failed export never leaves a partial file.
        fd, tmp = tempfile.mkstemp(suffix=SUFFIX[args.format], dir=osp.dirname(osp.abspath(out)))
        os.close(fd)
        try:
            exported = exporter(model, x, tmp)
            os.replace(tmp, out)
        finally:
            if osp.exists(tmp):
                os.remove(tmp)
    except UsageError as err:
        print(f'export: {err}', file=sys.stderr)
        return 2
    print(f'{args.format}: {type(model).__name__} on {tuple(x.shape)} -> {out}')
    worst = compare(eager, exported)
    if worst > args.tolerance:
        print(f'FAILED: the exported model differs from eager by {worst:.3e} (relative) > tolerance '
              f'{args.tolerance:g}', file=sys.stderr)
        return 1
    print(f'OK: max relative difference {worst:.3e} <= {args.tolerance:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
