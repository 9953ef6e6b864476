"""Benchmark the selective-scan backends: speed (forward, forward+backward) and peak memory.

Every (backend, case) pair runs in a fresh Python subprocess, so allocator pools and caches left by other
measurements cannot hide memory or warm caches. Inside the subprocess:

1. Peak memory of one forward+backward, measured first (cold, as in a first training step):
   * CPU: the peak resident set size (Linux ``VmHWM``) minus the RSS right before the call, after the
     inputs exist. The peak is reset through ``/proc/self/clear_refs``; it counts every page the call
     touched (PyTorch tensors, the allocator's slack, Python objects), and misses memory the C allocator
     reused from earlier frees, so it is a slight under-estimate for small cases.
   * CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before the call (tensors only).
2. Times: median of ``--repeats`` runs after ``--warmup`` runs, for the forward pass alone (no autograd
   graph) and for forward+backward (inputs require grad, loss = (y * w).sum()). Both the wall-clock time
   and the process CPU time (summed over threads) are recorded: on a shared, oversubscribed machine the
   wall time mostly measures the other tenants, while the CPU time with ``--threads 1`` stays close to the
   unloaded single-thread wall time.

Inputs are Mamba-like (S4D-real A = -(1..N), softplus(delta + delta_bias), D skip and silu(z) gate).

The output starts with a machine line (CPU model, the ISA extensions it has, the instruction-set variant
the fused ``cpu`` kernel actually ran, torch threads, load average before and after), so every number
carries its machine. ``cpu`` rows also report the kernel against an exp-bound limit measured on the spot:
a forward does one exp per state and step (b * dim * L * N), and the kernel's own vectorised exp runs at
most ``exp_throughput`` exps per thread-second (a micro-benchmark in the extension, measured in the same
worker); ``% exp-bound`` = achieved exps/s over that limit (wall: times the threads; CPU: per CPU-second).

``--isa avx2,auto`` runs the ``cpu`` backend once per variant (``MMVSSM_CPU_ISA`` in the worker), so the
forced-AVX2 and the native path are measured in one run; ``--threads 1,2`` likewise per thread count,
and rows with more threads show their forward speed-up over the 1-thread row (wall clock).

Example (the table of docs/benchmarks.md, quiet machine)::

    python tools/analysis_tools/benchmark_scan.py --isa avx2,auto --threads 1,2 \
        --cases long-L4096,long-L4096-N1,vim-t-224-b1 --json work_dirs/scan_cpu.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    dim: int
    length: int
    n_state: int
    groups: int = 1  # > 1: K scan directions stacked along the channels, one B/C per direction


CASES = [
    Case('vim-t-224-b1', 1, 384, 197, 16),
    Case('vim-t-224-b8', 8, 384, 197, 16),
    Case('vim-t-224-b8-bidir', 8, 768, 197, 16, groups=2),
    Case('evmamba-t-s1-4dir', 1, 384, 784, 16, groups=4),
    Case('long-L4096', 1, 384, 4096, 16),
    Case('long-L4096-N1', 1, 384, 4096, 1),
]
QUICK_CASES = ('vim-t-224-b1', 'vim-t-224-b8', 'long-L4096')


# --------------------------------------------------------------------------------------------------
# Worker side (one backend, one case, in a fresh process)
# --------------------------------------------------------------------------------------------------
def _make_inputs(case: Case, device, requires_grad: bool):
    import torch
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device)

    b, d, length, n = case.batch, case.dim, case.length, case.n_state
    bc_shape = (b, n, length) if case.groups == 1 else (b, case.groups, n, length)
    tensors = dict(
        u=randn(b, d, length), delta=randn(b, d, length) - 2.0,
        A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device),
        B=randn(*bc_shape), C=randn(*bc_shape), D=torch.ones(d, device=device),
        z=randn(b, d, length), delta_bias=0.1 * randn(d))
    return {k: v.requires_grad_(requires_grad) for k, v in tensors.items()}


def _sync(device) -> None:
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device, warmup: int, repeats: int) -> Tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds of ``fn``."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _peak_memory_mib(fn: Callable[[], None], device) -> Optional[float]:
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM (the peak RSS) to the current RSS
    except OSError:
        return None  # not Linux / not permitted: report no number rather than a wrong one
    before = _proc_status_kib('VmRSS')
    fn()
    # Linux syncs the per-thread RSS counters into VmRSS/VmHWM lazily (up to 64 pages per thread), so a
    # call that allocates little can read a peak slightly below `before`: that is no rise, not a saving.
    peak = max(_proc_status_kib('VmHWM'), _proc_status_kib('VmRSS'))
    return max(peak - before, 0) / 1024


def run_worker(spec: Dict) -> Dict:
    import torch
    from mmvssm.ops import selective_scan
    if spec['threads']:
        torch.set_num_threads(spec['threads'])
    case, device, backend = Case(**spec['case']), torch.device(spec['device']), spec['backend']
    args = dict(delta_softplus=True, backend=backend)
    result = dict(backend=backend, **asdict(case), threads=torch.get_num_threads(), isa=None,
                  exp_rate=None, fwd_ms=None, fwd_bwd_ms=None, fwd_cpu_ms=None, fwd_bwd_cpu_ms=None,
                  peak_mib=None)
    skip_backward = spec['skip_backward']

    grad_inputs = _make_inputs(case, device, requires_grad=True)
    weight = torch.randn(case.batch, case.dim, case.length, generator=torch.Generator().manual_seed(1))
    weight = weight.to(device)

    def fwd_bwd():
        y = selective_scan(**grad_inputs, **args)
        (y * weight).sum().backward()
        for t in grad_inputs.values():
            t.grad = None

    if not skip_backward:
        result['peak_mib'] = _peak_memory_mib(fwd_bwd, device)
        result['fwd_bwd_ms'], result['fwd_bwd_cpu_ms'] = _timed(fwd_bwd, device, spec['warmup'],
                                                                spec['repeats'])
    inputs = _make_inputs(case, device, requires_grad=False)

    def fwd():
        with torch.no_grad():
            selective_scan(**inputs, **args)

    result['fwd_ms'], result['fwd_cpu_ms'] = _timed(fwd, device, spec['warmup'], spec['repeats'])
    if backend == 'cpu':
        from mmvssm.ops import cpu_backend
        ext = cpu_backend.extension()
        result['isa'] = ext.isa()  # the variant that ran (MMVSSM_CPU_ISA or the best one)
        result['exp_rate'] = ext.exp_throughput(0.3)
    return result


# --------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------
def _spawn(spec: Dict, timeout: float) -> Dict:
    env = dict(os.environ)
    if spec.get('isa'):
        env['MMVSSM_CPU_ISA'] = spec['isa']
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'benchmark worker failed for {spec["backend"]} / {spec["case"]["name"]}:\n'
                           f'{proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return '—' if value is None else f'{value:.{digits}f}'


def _speedup(ref: Optional[float], value: Optional[float]) -> str:
    return '—' if ref is None or value is None else f'{ref / value:.1f}×'


def _exp_bound(r: Dict) -> Tuple[str, str]:
    """Achieved forward exps/s (G, wall) and the % of the exp-bound limit (wall / CPU time)."""
    if not r.get('exp_rate') or r['fwd_ms'] is None:
        return '—', '—'
    exps = r['batch'] * r['dim'] * r['length'] * r['n_state']  # one exp per state and step
    wall_rate, cpu_rate = exps / (r['fwd_ms'] / 1e3), exps / (r['fwd_cpu_ms'] / 1e3)
    return (f'{wall_rate / 1e9:.2f}',
            f'{100 * wall_rate / (r["exp_rate"] * r["threads"]):.0f} / '
            f'{100 * cpu_rate / r["exp_rate"]:.0f}')


def format_table(rows: List[Dict], speedup_clock: str = 'cpu') -> str:
    """Markdown table; speed-ups over the reference (and chunked) at the same thread count use the
    ``'wall'`` or ``'cpu'`` times."""
    ref = {(r['name'], r['threads']): r for r in rows if r['backend'] == 'reference'}
    chunked = {(r['name'], r['threads']): r for r in rows if r['backend'] == 'chunked'}
    # Thread scaling is a wall-clock question: the same backend/variant/case with 1 thread.
    single = {(r['backend'], r.get('isa'), r['name']): r for r in rows if r['threads'] == 1}
    fwd_key, bwd_key = ('fwd_ms', 'fwd_bwd_ms') if speedup_clock == 'wall' else ('fwd_cpu_ms',
                                                                                'fwd_bwd_cpu_ms')
    header = ['backend', 'isa', 'threads', 'case', 'b', 'dim', 'L', 'N', 'G', 'fwd ms', 'fwd+bwd ms',
              'fwd CPU ms', 'fwd+bwd CPU ms', 'peak MiB (f+b)', f'vs ref fwd ({speedup_clock})',
              f'vs ref f+b ({speedup_clock})', f'vs chunked fwd ({speedup_clock})',
              'fwd G exp/s', '% exp-bound (wall / CPU)', 'fwd scaling vs 1 thread (wall)']
    lines = []
    for r in rows:
        key = (r['name'], r['threads'])
        base, chk = ref.get(key, {}), chunked.get(key, {})
        lines.append([r['backend'], r.get('isa') or '—', str(r['threads']), r['name'], str(r['batch']),
                      str(r['dim']), str(r['length']), str(r['n_state']), str(r['groups']),
                      _fmt(r['fwd_ms']), _fmt(r['fwd_bwd_ms']), _fmt(r['fwd_cpu_ms']),
                      _fmt(r['fwd_bwd_cpu_ms']), _fmt(r['peak_mib']),
                      _speedup(base.get(fwd_key), r[fwd_key]), _speedup(base.get(bwd_key), r[bwd_key]),
                      _speedup(chk.get(fwd_key), r[fwd_key]), *_exp_bound(r),
                      _speedup(single.get((r['backend'], r.get('isa'), r['name']), {}).get('fwd_ms'),
                               r['fwd_ms']) if r['threads'] > 1 else '—'])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ['| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
           '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(line, widths)) + ' |' for line in lines]
    return '\n'.join(out)


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            info = f.read()
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    model = next((line.split(':', 1)[1].strip() for line in info.splitlines()
                  if line.startswith('model name')), 'unknown CPU')
    flags = next((line.split(':', 1)[1].split() for line in info.splitlines()
                  if line.startswith('flags')), [])
    isa = [f for f in ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq') if f in flags]
    return f'{model}, {os.cpu_count()} logical CPUs, ISA: {" ".join(isa) or "no AVX2"}'


def _load_average() -> str:
    try:
        with open('/proc/loadavg') as f:
            return f.read().split()[0]
    except OSError:
        return '?'


def machine_line(device, threads: List[int], isas: List[str], rows: List[Dict],
                 load_before: str) -> str:
    """Where the numbers come from: CPU, the kernel variants that actually ran, threads, load."""
    import torch
    ran = sorted({r['isa'] for r in rows if r.get('isa')})
    where = (f'{torch.cuda.get_device_name(device)}; host CPU ' if device.type == 'cuda' else '')
    return (f'machine: {where}{_cpu_model()}; cpu kernel variant(s) run: {", ".join(ran) or "—"} '
            f'(requested: {", ".join(isas)}); torch threads: {", ".join(map(str, threads))}; '
            f'torch {torch.__version__}; load average (1 min) before/after: '
            f'{load_before} / {_load_average()}')


def _int_list(text: str) -> List[int]:
    return [int(x) for x in text.split(',')]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--backends', default=None,
                        help='comma-separated backends (default: every backend available on --device)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    parser.add_argument('--cases', default=None,
                        help=f'comma-separated case names (default: all): {", ".join(c.name for c in CASES)}')
    parser.add_argument('--quick', action='store_true',
                        help=f'fewer repeats and only {", ".join(QUICK_CASES)}')
    parser.add_argument('--warmup', type=int, default=None, help='untimed runs (default 2, quick 1)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs (default 7, quick 3)')
    parser.add_argument('--threads', type=_int_list, default=[0],
                        help='torch threads, comma-separated for several runs (0: torch default)')
    parser.add_argument('--isa', default='auto',
                        help='fused cpu kernel variant(s), comma-separated: auto (the best the CPU has), '
                             'avx512, avx2, default; e.g. avx2,auto measures the forced-AVX2 and the '
                             'native path (other backends run once)')
    parser.add_argument('--ref-max-length', type=int, default=1024,
                        help='skip the reference forward+backward (reported as —) above this L; '
                             '0 disables the cap')
    parser.add_argument('--timeout', type=float, default=600, help='seconds per (backend, case) worker')
    parser.add_argument('--json', default=None, help='also write the results to this JSON file')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    import torch
    from mmvssm.ops import available_backends
    device = torch.device(args.device)
    available = available_backends(device)
    backends = args.backends.split(',') if args.backends else list(available)
    missing = [b for b in backends if b not in available]
    if missing:
        raise SystemExit(f'backend(s) {missing} not available on {device}; available: {available}')
    names = args.cases.split(',') if args.cases else [
        c.name for c in CASES if not args.quick or c.name in QUICK_CASES]
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f'unknown case(s) {unknown}; known: {list(by_name)}')
    isas = args.isa.split(',')
    if 'cpu' in backends:
        from mmvssm.ops import cpu_backend
        supported = cpu_backend.extension().available_isas() + ['auto']
        bad = [i for i in isas if i not in supported]
        if bad:
            raise SystemExit(f'--isa {bad}: not supported by this CPU; available: {supported}')
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)

    load_before = _load_average()
    rows = []
    for name in names:
        case = by_name[name]
        for threads in args.threads:
            for backend in backends:
                skip_backward = (backend == 'reference' and args.ref_max_length > 0
                                 and case.length > args.ref_max_length)
                for isa in (isas if backend == 'cpu' else [None]):
                    spec = dict(case=asdict(case), backend=backend, device=str(device), warmup=warmup,
                                repeats=repeats, threads=threads, skip_backward=skip_backward, isa=isa)
                    rows.append(_spawn(spec, args.timeout))
                    print(f'{backend:>9} {rows[-1]["isa"] or "":>7} {rows[-1]["threads"]}t {name:<20} '
                          f'fwd {_fmt(rows[-1]["fwd_ms"])}, fwd+bwd {_fmt(rows[-1]["fwd_bwd_ms"])} (ms)',
                          file=sys.stderr, flush=True)
    threads = sorted({r['threads'] for r in rows})
    print(machine_line(device, threads, isas, rows, load_before))
    print(f'selective_scan benchmark on {device}; median of {repeats} runs after {warmup} warm-up; '
          'peak memory: '
          f'{"CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS delta (VmHWM)"} '
          'of one cold forward+backward in a fresh process')
    # Kernel launches are asynchronous: only the wall clock (with synchronisation) times CUDA work.
    print(format_table(rows, 'wall' if device.type == 'cuda' else 'cpu'))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(dict(device=str(device), machine=machine_line(device, threads, isas, rows,
                                                                    load_before),
                           threads=threads, torch=torch.__version__, warmup=warmup, repeats=repeats,
                           results=rows), f, indent=2)


if __name__ == '__main__':
    main()
