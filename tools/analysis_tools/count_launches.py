"""Count the kernels one forward of a backbone launches, per op, on any device.

Every ATen op that does work (views and allocations excluded) is one kernel launch on a GPU, and every
Triton kernel call is one more; counting them at dispatch works on the CPU as well, with Triton kernels
run by its interpreter (``TRITON_INTERPRET=1``). Launch counts do not depend on the image size, so a small
image gives the count of a large one. Composite ops (``linear``, ``einsum``) count as one launch each, and
autocast must be off: a dispatch mode sees composite ops before autocast casts their inputs.

Examples::

    TRITON_INTERPRET=1 python tools/analysis_tools/count_launches.py --model vim-ti --backends cpu triton
    python tools/analysis_tools/count_launches.py --model evmamba-t --size 224 --top 10

On a GPU, ``gpu_check.py`` adds device time per kernel from the torch profiler.
"""
import argparse
import contextlib
import os
import os.path as osp
import sys
from collections import Counter
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that allocate or re-describe memory without a kernel.
_NO_KERNEL = {'empty', 'empty_like', 'empty_strided', 'detach', 'alias', 'lift_fresh', '_unsafe_view',
              'set_', 'resize_', 'new_empty', 'new_empty_strided', 'is_same_size', '_local_scalar_dense'}


class _LaunchCounter(TorchDispatchMode):

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts
        self.paused = False  # inside a Triton launch: the interpreter's own tensor copies are not kernels

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused and not func.is_view and name not in _NO_KERNEL:
            self.counts[f'aten::{name}'] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_launches() -> Iterator[Counter]:
    """Within the block, count kernel launches: ``aten::<op>`` and ``triton::<kernel>`` entries."""
    counts: Counter = Counter()
    counter = _LaunchCounter(counts)
    patched = []
    try:
        import triton.runtime.interpreter as interpreter
        import triton.runtime.jit as jit
        for cls in (jit.JITFunction, interpreter.InterpretedFunction):
            original = cls.run

            def run(self, *args, _original=original, **kwargs):
                counts[f'triton::{getattr(self.fn, "__name__", "kernel")}'] += 1
                counter.paused = True
                try:
                    return _original(self, *args, **kwargs)
                finally:
                    counter.paused = False

            cls.run = run
            patched.append((cls, original))
    except ImportError:  # no Triton: only ATen ops
        pass
    try:
        with counter:
            yield counts
    finally:
        for cls, original in patched:
            cls.run = original


def count_forward(model: torch.nn.Module, x: torch.Tensor, backend: str) -> Counter:
    """Launches of one steady-state inference forward of ``model`` on ``x`` with the scan ``backend``
    (after an uncounted one: caches of parameter-derived tensors are filled, as in a serving loop)."""
    from mmvssm.ops import use_backend
    with torch.inference_mode(), use_backend(backend):
        model(x)
        with count_launches() as counts:
            model(x)
    return counts


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='vim-ti',
                        help='a model name of benchmark_backbones.py (vim-ti, evmamba-t, evim-m1, ...)')
    parser.add_argument('--backends', nargs='+', default=['cpu'], help='scan backends to compare')
    parser.add_argument('--size', type=int, default=64, help='image size (launch counts do not depend '
                        'on it)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--top', type=int, default=8, help='ops to list per backend')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, Counter]:
    args = parse_args(argv)
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from benchmark_backbones import build_backbone
    model = build_backbone(args.model, args.size).to(args.device).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    results = {}
    print(f'kernel launches per forward: {args.model}, {args.size}x{args.size}, batch {args.batch}, '
          f'{args.device}' + (' (Triton interpreter)' if os.environ.get('TRITON_INTERPRET') == '1' else ''))
    for backend in args.backends:
        counts = count_forward(model, x, backend)
        results[backend] = counts
        top = ', '.join(f'{name} {n}' for name, n in counts.most_common(args.top))
        print(f'| {backend} | {sum(counts.values())} | {top} |')
    return results


if __name__ == '__main__':
    main()
