"""Compile mmvssm's Triton kernels for a GPU architecture without a GPU, exactly as a real call launches them.

The proxy we steer the GPU kernels by when no GPU is at hand. A workload (the scan shapes of the headline
benchmarks, or a whole backbone's forward and backward with ``--model``) runs on CPU tensors while the
``triton`` backend *records* its launches instead of running them; each recorded launch is then compiled
the way Triton's JIT specialises it at run time (its real strides, ints equal to 1 as constants,
divisibility-by-16 hints of pointers and ints) for CUDA ``--arch``, with the ``ptxas``/``cuobjdump`` the
Triton wheel ships. Per kernel it reports registers, spills, shared memory, resident warps per SM, and, for
the chunk loop of the scan kernels, the SASS per state element (one t, d, n): warp instructions, shuffles,
barriers, fenced atomics (MEMBAR) and MUFU (exp) instructions.

Examples::

    python tools/analysis_tools/triton_resources.py                       # scan workloads, sm_90
    python tools/analysis_tools/triton_resources.py --model vim-ti --size 1248 --batch 8
    python tools/analysis_tools/triton_resources.py --state 16 1 --configs all   # every autotuner tile
"""
import argparse
import collections
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for _path in (REPO_ROOT, osp.dirname(osp.abspath(__file__))):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# Hopper-class SM limits (sm_80/86/89 differ only slightly; close enough for a proxy).
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32
SHARED_PER_SM = 228 * 1024


def _binary(name: str) -> str:
    import triton
    return osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin', name)


def compile_call(fn, args: Sequence[Any], constexprs: Dict[str, Any], arch: int = 90):
    """Compile ``fn`` for CUDA ``arch`` as the JIT would for a launch with ``args`` (tensors may live on the
    CPU: only their dtype, address alignment and strides matter) and ``constexprs``/launch options."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget('cuda', arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*args, **constexprs)
    options, signature, consts, attrs = fn._pack_args(backend, constexprs, bound, specialization, options)
    return triton.compile(ASTSource(fn, signature, consts, attrs), target=target, options=options.__dict__)


def _cuobjdump(cubin: bytes, flag: str) -> str:
    with tempfile.NamedTemporaryFile(suffix='.cubin', delete=False) as f:
        f.write(cubin)
    try:
        return subprocess.run([_binary('cuobjdump'), flag, f.name], capture_output=True, text=True,
                              check=True).stdout
    finally:
        os.remove(f.name)


def sass_loops(sass: str, min_length: int = 40) -> List[List[str]]:
    """The instructions of each loop (a backward branch and its target) of at least ``min_length``."""
    instructions = []
    for line in sass.splitlines():
        m = re.match(r'\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;', line)
        if m:
            instructions.append((int(m.group(1), 16), m.group(2)))
    loops = []
    for address, text in instructions:
        m = re.search(r'\bBRA\s+(?:\S+\s+)?0x([0-9a-f]+)', text)
        if m and int(m.group(1), 16) < address:
            body = [t for a, t in instructions if int(m.group(1), 16) <= a <= address]
            if len(body) >= min_length:
                loops.append(body)
    return loops


def _opcode(text: str) -> str:
    words = text.split()
    word = words[1] if words[0].startswith('@') and len(words) > 1 else words[0]
    return word.split('.')[0]


def occupancy(registers: int, shared: int, num_warps: int) -> int:
    """Warps of this kernel resident on one SM (register file, shared memory, block and warp limits)."""
    regs_per_warp = -(-registers * 32 // 256) * 256
    blocks = min(MAX_BLOCKS_PER_SM, REGISTERS_PER_SM // max(1, regs_per_warp * num_warps),
                 MAX_WARPS_PER_SM // num_warps, SHARED_PER_SM // (shared + 1024))
    return blocks * num_warps


def analyse(compiled, num_warps: int, elements_per_iteration: Optional[int]) -> Dict[str, Any]:
    """Resources of a compiled kernel and the SASS of its loops per state element."""
    usage = _cuobjdump(compiled.asm['cubin'], '-res-usage')
    m = re.search(r'REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)', usage)
    registers, stack, _, local = (int(x) for x in m.groups())
    shared = compiled.metadata.shared
    row = dict(registers=registers, stack=stack, local=local, shared=shared,
               warps_per_sm=occupancy(registers, shared, num_warps))
    ptx = compiled.asm['ptx']
    row['spills'] = local > 0 or bool(re.search(r'\.local\b', ptx))
    sass = _cuobjdump(compiled.asm['cubin'], '-sass')
    # fenced atomics: a default (acq_rel) atomic compiles to MEMBAR + strong atomic + L1 invalidate
    row['membars'] = sum(1 for line in sass.splitlines() if re.search(r'\bMEMBAR\b', line))
    loops = sass_loops(sass)
    if loops and elements_per_iteration:
        per_warp = elements_per_iteration / num_warps
        counts = [collections.Counter(_opcode(t) for t in body) for body in loops]
        n = len(loops)
        row.update(loops=n, loop_instructions=sum(len(b) for b in loops) / n,
                   instr_per_element=sum(len(b) for b in loops) / n / per_warp,
                   shfl_per_element=sum(c['SHFL'] for c in counts) / n / per_warp,
                   bar_per_element=sum(c['BAR'] for c in counts) / n / per_warp,
                   mufu_per_element=sum(c['MUFU'] for c in counts) / n / per_warp,
                   atomics_per_loop=sum(c['RED'] + c['REDG'] + c['ATOM'] + c['ATOMG'] for c in counts) / n)
    return row


# --------------------------------------------------------------------------------------------------
# workloads: what runs while the backend records its launches
# --------------------------------------------------------------------------------------------------
def _scan_workloads(n_state: int, batch: int, dim: int, length: int):
    """The three fused layouts at a benchmark shape (bf16 activations, float32 parameters), fwd + bwd."""
    import torch
    from mmvssm.ops import atrous_scan, bidirectional_scan, selective_scan

    def leaf(*shape, dtype=torch.bfloat16):
        return torch.zeros(*shape, dtype=dtype).requires_grad_()

    def plain():
        u, dt, z = leaf(batch, dim, length), leaf(batch, dim, length), leaf(batch, dim, length)
        proj = leaf(batch, length, 2 * n_state)  # B and C as transposed views of one projection
        B, C = proj[..., :n_state].transpose(1, 2), proj[..., n_state:].transpose(1, 2)
        A, D, bias = leaf(dim, n_state, dtype=torch.float32), leaf(dim, dtype=torch.float32), leaf(
            dim, dtype=torch.float32)
        selective_scan(u, dt, A, B, C, D, z, bias, delta_softplus=True, backend='triton').sum().backward()

    def bidirectional():
        u, dt = leaf(batch, 2, dim, length), leaf(batch, 2, dim, length)
        B, C = leaf(batch, 2, n_state, length), leaf(batch, 2, n_state, length)
        z = leaf(batch, dim, length)
        A, D, bias = (leaf(2, dim, n_state, dtype=torch.float32), leaf(2, dim, dtype=torch.float32),
                      leaf(2, dim, dtype=torch.float32))
        bidirectional_scan(u, dt, A, B, C, D, z, bias, delta_softplus=True, backend='triton').sum().backward()

    def atrous():
        side = max(2, int(round((length * 4) ** 0.5)) // 2 * 2)
        xs = leaf(batch, 4, dim, (side // 2) ** 2)
        dt = leaf(batch, 4, dim, (side // 2) ** 2)
        B, C = leaf(batch, 4, n_state, (side // 2) ** 2), leaf(batch, 4, n_state, (side // 2) ** 2)
        A, D, bias = (leaf(4, dim, n_state, dtype=torch.float32), leaf(4, dim, dtype=torch.float32),
                      leaf(4, dim, dtype=torch.float32))
        atrous_scan(xs, dt, A, B, C, D, bias, delta_softplus=True, height=side, width=side,
                    backend='triton').sum().backward()

    def inference(work):
        def run():
            with torch.no_grad():
                try:
                    work()
                except RuntimeError:  # .backward() of an output that needs no grad: the forward ran
                    pass
        return run

    works = dict(plain=plain, bidirectional=bidirectional, atrous=atrous)
    return {**{f'{k} training': v for k, v in works.items()},
            **{f'{k} inference': inference(v) for k, v in works.items()}}


def _model_workload(model: str, size: int, batch: int):
    """A backbone of benchmark_backbones.py (e.g. vim-ti): its inference forward, and a training forward +
    backward, bf16 autocast as on a GPU."""
    import torch
    from benchmark_backbones import build_backbone
    from mmvssm.ops import use_backend

    def run(training: bool):
        net = build_backbone(model, size)
        x = torch.zeros(batch, 3, size, size)
        with use_backend('triton'), torch.autocast('cpu', dtype=torch.bfloat16), torch.set_grad_enabled(training):
            outs = net(x)
            if training:
                sum(o.float().sum() for o in (outs if isinstance(outs, (tuple, list)) else [outs])).backward()

    return {f'{model} {size}² b{batch} inference': lambda: run(False),
            f'{model} {size}² b{batch} training': lambda: run(True)}


def recorded_launches(workloads: Dict[str, Any]) -> List[Dict[str, Any]]:
    import torch
    from mmvssm.ops import triton_backend
    launches = []
    for name, work in workloads.items():
        with triton_backend.recording_launches() as recorded, torch.random.fork_rng():
            work()
        for launch in recorded:
            launches.append(dict(launch, workload=name))
    return launches


def _mode(options: Dict[str, Any]) -> str:
    if 'K' in options:
        return 'conv'
    return 'bidirectional' if options.get('BIDIRECTIONAL') else 'atrous' if options.get('ATROUS') else 'plain'


def report(launches: List[Dict[str, Any]], arch: int, all_configs: bool) -> List[Dict[str, Any]]:
    """Compile each distinct recorded launch (with its default tile, or every tile of the autotuner's
    space) and analyse it."""
    rows, seen = [], set()
    for launch in launches:
        for options in (launch['alternatives'] or [launch['options']]) if all_configs else [launch['options']]:
            name = launch['kernel'].__name__
            key = (name, tuple(sorted(options.items())), launch['workload'])
            if key in seen:
                continue
            seen.add(key)
            warps = options['num_warps']
            # state elements (one t, d, n) a chunk-loop iteration of a scan kernel handles
            elements = (options['BLOCK_L'] * options['BLOCK_D'] * options['BLOCK_N'] if 'BLOCK_N' in options
                        else None)
            row = analyse(compile_call(launch['kernel'], launch['args'], dict(options), arch), warps, elements)
            tile = {k: options[k] for k in ('BLOCK_D', 'BLOCK_L', 'BLOCK_N', 'K', 'HALVES') if k in options}
            rows.append(dict(row, kernel=name, mode=_mode(options), workload=launch['workload'],
                             tile=dict(tile, warps=warps, stages=options.get('num_stages', 1))))
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return '—'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def print_table(rows: List[Dict[str, Any]], arch: int) -> None:
    print(f'sm_{arch}, compiled with the run-time specialisation of each call; per state element = one (t, d, n) '
          'of the chunk loop, counted per warp')
    print('| workload | kernel | mode | tile (D, L, N or K, warps, stages[, halves]) | registers | spills | shared | warps/SM | '
          'instr/elem | shfl/elem | bar/elem | MUFU/elem | atomics/loop | MEMBARs (kernel) |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        t = r['tile']
        tile = ', '.join(str(t[k]) for k in ('BLOCK_D', 'BLOCK_L', 'BLOCK_N', 'K', 'warps', 'stages') if k in t)
        tile += ', halves' if t.get('HALVES') else ''
        print(f"| {r['workload']} | {r['kernel']} | {r['mode']} | {tile} | {r['registers']} | "
              f"{'yes' if r['spills'] else 'no'} | {r['shared']} | {r['warps_per_sm']} | "
              f"{_fmt(r.get('instr_per_element'))} | {_fmt(r.get('shfl_per_element'), 4)} | "
              f"{_fmt(r.get('bar_per_element'), 4)} | {_fmt(r.get('mufu_per_element'), 4)} | "
              f"{_fmt(r.get('atomics_per_loop'), 1)} | {r['membars']} |", flush=True)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', type=int, default=90, help='CUDA compute capability x10 (90: H100/H200)')
    parser.add_argument('--state', type=int, nargs='+', default=[16], help='state sizes N (scan workloads)')
    parser.add_argument('--shape', type=int, nargs=3, default=[16, 384, 1025], metavar=('BATCH', 'DIM', 'L'),
                        help='scan workload shape (default: the b16 d384 L1025 benchmark)')
    parser.add_argument('--model', default=None,
                        help='compile the launches of this backbone\'s forward + backward instead (e.g. vim-ti)')
    parser.add_argument('--size', type=int, default=1248, help='--model input size')
    parser.add_argument('--batch', type=int, default=8, help='--model batch')
    parser.add_argument('--configs', choices=['default', 'all'], default='default',
                        help='compile the default tile, or every tile in the autotuner\'s space')
    parser.add_argument('--json', default=None, help='also write the rows to this file')
    args = parser.parse_args(argv)
    os.environ.pop('TRITON_INTERPRET', None)
    if args.model:
        launches = recorded_launches(_model_workload(args.model, args.size, args.batch))
    else:
        launches = []
        for n_state in args.state:
            launches += recorded_launches(_scan_workloads(n_state, *args.shape))
    rows = report(launches, args.arch, args.configs == 'all')
    print_table(rows, args.arch)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
