"""Forward latency, throughput and peak memory of the backbones vs input resolution.

Examples::

    python tools/analysis_tools/benchmark_backbones.py --out-dir work_dirs/bench
    python tools/analysis_tools/benchmark_backbones.py --models vim-ti deit-ti --sizes 224 512 1248 \\
        --batch 1 --repeat 5 --max-case-seconds 600 --profile
    python tools/analysis_tools/benchmark_backbones.py --mode scan -- --help   # the scan's own benchmark

Every (model, size) case runs in a fresh subprocess, so peak memory is not polluted by earlier cases:

* latency: median of ``--repeat`` timed forwards (``torch.inference_mode``) after ``--warmup`` untimed
  ones; images/s = batch / median latency;
* memory, CPU: peak RSS during the first forward minus the RSS just before it (the kernel's high-water
  mark ``VmHWM`` is reset through ``/proc/self/clear_refs``); CUDA: ``torch.cuda.max_memory_allocated``
  during the first forward minus the memory allocated before it (weights and input excluded in both);
* page faults: minor faults per timed forward (memory malloc took from the OS and touched for the first
  time); ``--retain-freed-memory`` makes malloc keep freed memory (``mmvssm.utils.retain_freed_memory``).

A case that exceeds ``--max-case-seconds`` is killed and recorded as a timeout; larger sizes of that model
are then recorded as skipped (they would take longer). Outputs: ``results.json``, ``results.md`` and
``results.png`` (time and memory vs resolution, log-log) in ``--out-dir``.
"""
import argparse
import json
import os
import os.path as osp
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
SCAN_BENCHMARK = osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'benchmark_scan.py')

# name -> (display name, model config; `img_size` is set to the benchmarked size where the model has
# a position embedding, so no per-forward interpolation is timed)
# Vim as in its classifier (middle class token, final norm, class-token output), like DeiT's backbone.
_VIM = dict(type='Vim', with_cls_token=True, out_type='cls_token', out_indices=(-1, ), final_norm=True)
MODELS: Dict[str, Dict[str, Any]] = {
    'vim-ti': dict(label='Vim-Ti', cfg=dict(_VIM, arch='tiny'), img_size=True),
    'vim-s': dict(label='Vim-S', cfg=dict(_VIM, arch='small'), img_size=True),
    'evmamba-t': dict(label='EfficientVMamba-T', cfg=dict(type='EfficientVMamba', arch='t')),
    'evmamba-s': dict(label='EfficientVMamba-S', cfg=dict(type='EfficientVMamba', arch='s')),
    'evmamba-b': dict(label='EfficientVMamba-B', cfg=dict(type='EfficientVMamba', arch='b')),
    'evim-m1': dict(label='EfficientViM-M1', cfg=dict(type='EfficientViM', arch='m1')),
    'evim-m2': dict(label='EfficientViM-M2', cfg=dict(type='EfficientViM', arch='m2')),
    'evim-m3': dict(label='EfficientViM-M3', cfg=dict(type='EfficientViM', arch='m3')),
    'evim-m4': dict(label='EfficientViM-M4', cfg=dict(type='EfficientViM', arch='m4')),
    # mmpretrain's ViT: attention through F.scaled_dot_product_attention (torch >= 2).
    'deit-ti': dict(label='DeiT-Ti', cfg=dict(type='mmpretrain.VisionTransformer', arch='deit-tiny'),
                    img_size=True),
    'deit-s': dict(label='DeiT-S', cfg=dict(type='mmpretrain.VisionTransformer', arch='deit-small'),
                   img_size=True),
    # The same DeiT with attention written as softmax(q k^T) v (the (L, L) matrix is materialised),
    # as in the timm DeiT the Vim paper compared against.
    'deit-ti-explicit': dict(label='DeiT-Ti (explicit attn)', explicit_attention=True,
                             cfg=dict(type='mmpretrain.VisionTransformer', arch='deit-tiny'),
                             img_size=True),
}
DEFAULT_MODELS = ['vim-ti', 'vim-s', 'evmamba-t', 'evmamba-s', 'evmamba-b', 'evim-m1', 'evim-m2',
                  'evim-m3', 'evim-m4', 'deit-ti', 'deit-s']
DEFAULT_SIZES = [224, 512, 768, 1024, 1248]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark backbones vs input resolution',
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--mode', choices=['backbone', 'scan'], default='backbone',
                        help='`scan` runs tools/analysis_tools/benchmark_scan.py with the remaining args')
    parser.add_argument('--models', nargs='+', default=DEFAULT_MODELS, choices=sorted(MODELS))
    parser.add_argument('--sizes', nargs='+', type=int, default=DEFAULT_SIZES,
                        help='square input sizes')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:i]')
    parser.add_argument('--repeat', type=int, default=5, help='timed forwards per case (median)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed forwards before timing')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch default)')
    parser.add_argument('--max-case-seconds', type=float, default=300,
                        help='kill a case after this long; the repeats are cut to fit it first')
    parser.add_argument('--retain-freed-memory', action='store_true',
                        help='CPU: keep freed memory in each case process instead of page-faulting it '
                             'back (mmvssm.utils.retain_freed_memory; glibc only)')
    parser.add_argument('--profile', action='store_true',
                        help='also record the top ops of one forward (torch.profiler)')
    parser.add_argument('--compile', action='store_true',
                        help='time torch.compile(model) (default inductor backend); the compilation is '
                             'part of the first forward, reported as first_forward_s')
    parser.add_argument('--out-dir', default='work_dirs/benchmark_backbones')
    parser.add_argument('--no-plot', action='store_true', help='skip the PNG (no matplotlib needed)')
    parser.add_argument('--report', metavar='JSON',
                        help='only re-render results.md/.png in --out-dir from a results.json')
    parser.add_argument('--worker', help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args, rest = parser.parse_known_args(argv)
    if args.mode == 'backbone' and rest:
        parser.error(f'unrecognized arguments: {" ".join(rest)}')
    args.scan_args = [a for a in rest if a != '--']
    if args.batch < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error('--batch and --repeat must be >= 1, --warmup >= 0')
    return args


# --------------------------------------------------------------------------------------------------
# One case (runs in its own process)
# --------------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        return int(re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M).group(1))


def _reset_peak_rss() -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def build_backbone(name: str, size: int):
    """Build a benchmarked backbone by its short name, in eval mode."""
    import mmvssm  # noqa: F401  (registers the backbones)
    from mmengine.registry import MODELS as REGISTRY
    spec = MODELS[name]
    cfg = dict(spec['cfg'])
    if spec.get('img_size'):
        cfg['img_size'] = size
    model = REGISTRY.build(cfg)
    model.eval()  # not chained: some OpenMMLab train() overrides return None
    if spec.get('explicit_attention'):
        from mmpretrain.models.utils.attention import (MultiheadAttention,
                                                       scaled_dot_product_attention_pyimpl)
        for module in model.modules():
            if isinstance(module, MultiheadAttention):
                module.scaled_dot_product_attention = scaled_dot_product_attention_pyimpl
    return model


def run_case(name: str, size: int, batch: int, device: str, repeat: int, warmup: int,
             budget_s: float, profile: bool, compile_model: bool = False) -> Dict[str, Any]:
    """Measure one (model, size) case in this process; returns the record."""
    import torch
    dev = torch.device(device)
    model = build_backbone(name, size).to(dev)
    if compile_model:
        model = torch.compile(model)
    x = torch.randn(batch, 3, size, size, device=dev)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    record: Dict[str, Any] = dict(params=sum(p.numel() for p in model.parameters()))
    with torch.inference_mode():
        # First forward: peak memory (nothing freed-but-cached from earlier forwards yet).
        if dev.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        else:
            base = _proc_status_kib('VmRSS') * 1024
            _reset_peak_rss()
        start = time.perf_counter()
        model(x)
        sync()
        first = time.perf_counter() - start
        if dev.type == 'cuda':
            record['peak_mem_mb'] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        else:
            record['peak_mem_mb'] = (_proc_status_kib('VmHWM') * 1024 - base) / 2**20
        record['first_forward_s'] = first
        # Cut the repeats to what fits in the budget (the first forward is the estimate).
        fits = int(max(budget_s * 0.8 - first, 0) // max(first, 1e-6))
        warmup_done = min(warmup, max(fits - 1, 0))
        repeats = max(1, min(repeat, fits - warmup_done))
        for _ in range(warmup_done):
            model(x)
        sync()
        times, cpu_times = [], []
        faults_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        # Minor page faults: first touches of memory malloc just got from the OS (see
        # mmvssm/utils/cpu_allocator.py), a kernel-time cost outside any op.
        record['page_faults_per_forward'] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                             - faults_start) / repeats
        if profile:
            record['profile'] = _profile(model, x, dev)
    if compile_model:
        from torch._dynamo.utils import counters
        record['compiled_graphs'] = counters['stats']['unique_graphs']  # 0: nothing was compiled
    latency = statistics.median(times)
    # Process CPU time (all threads): on an oversubscribed machine it tracks the unloaded time better.
    record.update(latency_ms=latency * 1e3, images_per_s=batch / latency, repeats=len(times),
                  cpu_ms=statistics.median(cpu_times) * 1e3,
                  warmup=warmup_done, times_ms=[t * 1e3 for t in times])
    return record


def _profile(model, x, dev, top: int = 15) -> List[Dict[str, Any]]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else [])
    with profile(activities=activities) as prof:
        model(x)
        if dev.type == 'cuda':
            torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [dict(op=e.key, calls=e.count, self_cpu_ms=e.self_cpu_time_total / 1e3,
                 percent=100 * e.self_cpu_time_total / total) for e in events[:top]]


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------
def environment(device: str, threads: Optional[int]) -> Dict[str, Any]:
    """What the numbers were measured on."""
    import torch
    import mmvssm.ops as ops
    env: Dict[str, Any] = dict(
        python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
        device=device, torch_threads=threads or torch.get_num_threads(), cpu_count=os.cpu_count(),
        scan_backends=list(ops.available_backends(device)),
        scan_backend_env=os.environ.get('MMVSSM_SCAN_BACKEND', ''))
    # `auto` takes the first available of cuda -> cpu -> chunked (mmvssm/ops/selective_scan.py).
    env['scan_backend_auto'] = env['scan_backend_env'] or next(
        b for b in ('cuda', 'cpu', 'chunked') if b in env['scan_backends'])
    try:
        lscpu = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        keep = ('Model name', 'Architecture', 'CPU(s)', 'Thread(s) per core', 'Core(s) per socket',
                'Socket(s)', 'CPU max MHz', 'L2 cache', 'L3 cache', 'Flags')
        env['lscpu'] = {k.strip(): v.strip() for k, v in
                        (line.split(':', 1) for line in lscpu.splitlines() if ':' in line)
                        if k.strip() in keep and k.strip() != 'Flags'}
        flags = dict(line.split(':', 1) for line in lscpu.splitlines() if ':' in line).get('Flags', '')
        env['lscpu']['SIMD'] = ' '.join(f for f in flags.split() if f.startswith(('avx', 'amx')))
    except (OSError, subprocess.SubprocessError):
        env['lscpu'] = {}
    if device.startswith('cuda') and torch.cuda.is_available():
        env['gpu'] = torch.cuda.get_device_name(torch.device(device))
    else:
        # The instruction sets the CPU work ran with: ATEN_CPU_CAPABILITY and MMVSSM_CPU_ISA force lower ones.
        from mmvssm.ops import cpu_backend
        env['torch_cpu_capability'] = torch.backends.cpu.get_cpu_capability()
        env['scan_kernel_isa'] = cpu_backend.extension().isa() if cpu_backend.is_available() else 'not built'
    try:
        with open('/proc/loadavg') as f:
            env['loadavg_start'] = f.read().split()[:3]
    except OSError:
        pass
    return env


def _spawn_case(args: argparse.Namespace, name: str, size: int) -> Dict[str, Any]:
    cmd = [sys.executable, osp.abspath(__file__), '--worker', f'{name}:{size}', '--batch',
           str(args.batch), '--device', args.device, '--repeat', str(args.repeat), '--warmup',
           str(args.warmup), '--max-case-seconds', str(args.max_case_seconds)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    if args.profile:
        cmd.append('--profile')
    if args.compile:
        cmd.append('--compile')
    if args.retain_freed_memory:
        cmd.append('--retain-freed-memory')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT,
                                                                    os.environ.get('PYTHONPATH')])))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=args.max_case_seconds)
    except subprocess.TimeoutExpired:
        return dict(status='timeout', wall_s=time.perf_counter() - start)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
        status = 'oom' if proc.returncode in (-9, 137) else 'error'
        return dict(status=status, error=tail[0][:300], returncode=proc.returncode, wall_s=wall)
    record = json.loads(lines[-1])
    record.update(status='ok', wall_s=wall)
    return record


def run_all(args: argparse.Namespace) -> Dict[str, Any]:
    results: Dict[str, Any] = dict(environment=environment(args.device, args.threads),
                                   settings=dict(batch=args.batch, repeat=args.repeat,
                                                 warmup=args.warmup,
                                                 max_case_seconds=args.max_case_seconds,
                                                 malloc='retain freed memory'
                                                 if args.retain_freed_memory else 'glibc default',
                                                 compiled=args.compile),
                                   cases=[])
    for name in args.models:
        given_up_at = None
        for size in sorted(args.sizes):
            if given_up_at is not None:
                record = dict(status='skipped', error=f'{given_up_at}² already exceeded the cap')
            else:
                record = _spawn_case(args, name, size)
                if record['status'] in ('timeout', 'oom'):
                    given_up_at = size
            record.update(model=name, label=MODELS[name]['label'], size=size, batch=args.batch)
            results['cases'].append(record)
            print(_case_line(record), flush=True)
    with open('/proc/loadavg') as f:
        results['environment']['loadavg_end'] = f.read().split()[:3]
    return results


def _case_line(r: Dict[str, Any]) -> str:
    if r['status'] != 'ok':
        return f"{r['label']:<24} {r['size']:>5}²  {r['status']}: {r.get('error', '')}"
    return (f"{r['label']:<24} {r['size']:>5}²  {r['latency_ms']:10.1f} ms  {r['images_per_s']:8.2f} "
            f"img/s  {r['peak_mem_mb']:9.1f} MB  (n={r['repeats']})")


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------
def _lookup(cases: Sequence[Dict[str, Any]]) -> Dict[tuple, Dict[str, Any]]:
    return {(c['model'], c['size']): c for c in cases}


def _cell(case: Optional[Dict[str, Any]], key: str, fmt: str) -> str:
    if case is None:
        return ''
    if case['status'] != 'ok':
        return case['status']
    return format(case[key], fmt)


def markdown(results: Dict[str, Any]) -> str:
    """Tables: latency, images/s, memory per model and size; Vim-Ti/DeiT-Ti ratios; 512->1024 growth."""
    cases = results['cases']
    env = results['environment']
    sizes = sorted({c['size'] for c in cases})
    models = list(dict.fromkeys(c['model'] for c in cases))
    table = _lookup(cases)
    batch = results['settings']['batch']
    isa = (f"ISA: torch {env['torch_cpu_capability']}, scan kernel {env['scan_kernel_isa']}; "
           if 'torch_cpu_capability' in env else '')
    out = [f"Device: {env['device']} ({env.get('gpu') or env.get('lscpu', {}).get('Model name', '?')}), "
           f"{isa}torch {env['torch']}, {env['torch_threads']} thread(s), batch {batch}, malloc: "
           f"{results['settings'].get('malloc', 'glibc default')}, "
           f"{'torch.compile' if results['settings'].get('compiled') else 'eager'}, scan backend "
           f"`{env['scan_backend_auto']}` (available: {', '.join(env['scan_backends'])}); "
           f"load average {' '.join(env.get('loadavg_start', []))} -> "
           f"{' '.join(env.get('loadavg_end', []))}.", '']
    header = '| model | ' + ' | '.join(f'{s}²' for s in sizes) + ' |'
    rule = '|---|' + '---|' * len(sizes)
    for title, key, fmt in (('Forward latency (ms, median wall clock)', 'latency_ms', '.1f'),
                            ('Forward CPU time (ms, median, all threads)', 'cpu_ms', '.1f'),
                            (f'Throughput (images/s at batch {batch})', 'images_per_s', '.2f'),
                            ('Peak memory of the forward (MiB)', 'peak_mem_mb', '.1f'),
                            ('Minor page faults per forward', 'page_faults_per_forward', '.0f')):
        out += [f'**{title}**', '', header, rule]
        for m in models:
            label = MODELS[m]['label']
            out.append(f'| {label} | ' + ' | '.join(_cell(table.get((m, s)), key, fmt)
                                                   for s in sizes) + ' |')
        out.append('')
    for base in ('deit-ti', 'deit-ti-explicit'):
        if 'vim-ti' in models and base in models:
            out += [f"**Vim-Ti / {MODELS[base]['label']}** (below 1: Vim-Ti is better)", '',
                    '| ratio | ' + ' | '.join(f'{s}²' for s in sizes) + ' |', rule]
            for title, key in (('time (wall)', 'latency_ms'), ('time (CPU)', 'cpu_ms'),
                               ('memory', 'peak_mem_mb')):
                cells = []
                for s in sizes:
                    a, b = table.get(('vim-ti', s)), table.get((base, s))
                    ok = a and b and a['status'] == b['status'] == 'ok'
                    cells.append(f'{a[key] / b[key]:.2f}' if ok else '')
                out.append(f'| {title} | ' + ' | '.join(cells) + ' |')
            out.append('')
    if 512 in sizes and 1024 in sizes:
        out += ['**Time growth 512² -> 1024²** (4× the tokens; linear scaling = 4.0×)', '',
                '| model | wall | CPU |', '|---|---|---|']
        for m in models:
            a, b = table.get((m, 512)), table.get((m, 1024))
            if a and b and a['status'] == b['status'] == 'ok':
                out.append(f"| {MODELS[m]['label']} | {b['latency_ms'] / a['latency_ms']:.2f}× | "
                           f"{b['cpu_ms'] / a['cpu_ms']:.2f}× |")
        out.append('')
    profiled = [c for c in cases if c.get('profile')]
    for c in profiled:
        out += [f"**Profile: {c['label']} at {c['size']}²** (one forward, top ops by self CPU time)", '',
                '| op | calls | self CPU ms | % |', '|---|---|---|---|']
        out += [f"| `{p['op']}` | {p['calls']} | {p['self_cpu_ms']:.1f} | {p['percent']:.1f} |"
                for p in c['profile']]
        out.append('')
    return '\n'.join(out)


def plot(results: Dict[str, Any], path: str) -> None:
    """Time and memory vs resolution, log-log, one line per model (as in the Vim paper's Fig. 1)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    models = list(dict.fromkeys(c['model'] for c in results['cases']))
    colors = plt.get_cmap('tab20').colors
    markers = {'vim': 'o', 'deit': 's', 'evmamba': '^', 'evim': 'D'}
    for i, m in enumerate(models):
        ok = sorted((c for c in results['cases'] if c['model'] == m and c['status'] == 'ok'),
                    key=lambda c: c['size'])
        if not ok:
            continue
        sizes = [c['size'] for c in ok]
        color = colors[(2 * i) % 20 + (i // 10) % 2]  # dark shades first, then light ones
        style = dict(linestyle='--' if m.startswith('deit') else '-', color=color,
                     marker=markers.get(m.split('-')[0], 'o'), label=MODELS[m]['label'])
        for ax, key in zip(axes, ('latency_ms', 'peak_mem_mb')):
            ax.plot(sizes, [c[key] for c in ok], **style)
    env = results['environment']
    for ax, title in zip(axes, ('forward latency (ms)', 'peak forward memory (MiB)')):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('input resolution (square)')
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
        sizes = sorted({c['size'] for c in results['cases']})
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[1].legend(fontsize=8, loc='center left', bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{env['device']}, torch {env['torch']}, {env['torch_threads']} thread(s), batch "
                 f"{results['settings']['batch']}, scan backend {env['scan_backend_auto']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    args = parse_args(argv)
    if args.mode == 'scan':
        if not osp.exists(SCAN_BENCHMARK):
            raise SystemExit(f'--mode scan runs {SCAN_BENCHMARK}, which does not exist')
        raise SystemExit(subprocess.call([sys.executable, SCAN_BENCHMARK] + args.scan_args))
    if args.worker:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        from mmvssm.utils.cpu_allocator import retain_freed_memory
        if args.retain_freed_memory and not retain_freed_memory():
            raise SystemExit('--retain-freed-memory: not applied (the C library is not glibc)')
        name, size = args.worker.rsplit(':', 1)
        record = run_case(name, int(size), args.batch, args.device, args.repeat, args.warmup,
                          args.max_case_seconds, args.profile, args.compile)
        print(json.dumps(record))
        return None
    os.makedirs(args.out_dir, exist_ok=True)
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
    else:
        results = run_all(args)
        with open(osp.join(args.out_dir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=1)
    table = markdown(results)
    with open(osp.join(args.out_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    if not args.no_plot:
        plot(results, osp.join(args.out_dir, 'results.png'))
    print(table)
    return results


if __name__ == '__main__':
    main()
