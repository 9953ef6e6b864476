"""What this machine's GPU (or CPU) gets from mmvssm's selective-scan backends, in one command.

Examples::

    python tools/analysis_tools/gpu_check.py --out work_dirs/gpu_check.json
    python tools/analysis_tools/gpu_check.py --tiny                  # seconds; on a CPU too
    python tools/analysis_tools/gpu_check.py --sections parity scan --device cuda:1

Each section prints a table labelled with the machine (GPU name, or CPU model + ISA + threads); ``--out``
writes everything as JSON. A row that fails (out of memory, a backend that refuses an input) records its
error and the check goes on; so does a section that fails as a whole.

Sections:

1. ``environment``: torch / Triton / CUDA / mamba_ssm versions, GPU, CPU, threads, the selective-scan
   backends available on ``--device`` and the one ``backend='auto'`` picks there.
2. ``parity``: every available backend but ``reference`` against the float64 reference recurrence, in
   fp32 and bf16 (bf16 activations u/delta/B/C/z with fp32 A/D/delta_bias, as under autocast; the
   reference runs on the same rounded values in float64). Compared: the output, the last state, and the
   gradient of every input through a weighted sum of both (without the last state's term where a backend
   refuses its gradient, which is noted). Error = max |x - ref| / max |ref| per tensor; pass when every
   error is below 1e-4 (fp32) or 1e-2 (bf16).
3. ``scan``: forward (no autograd graph) and forward+backward ms of each backend on b16 d384 L1025 N16
   and b4 d384 L4097 N16, bf16 activations, with the memory-traffic floor of the shape: the fewest bytes
   the op can move (forward: read u, delta, z, B, C, A, D, delta_bias, write y; backward: read them and
   dy again, write one gradient each) divided by the device's bandwidth, measured as a device-to-device
   copy (2 × bytes per copy).
4. ``train``: one training step (bf16 autocast forward, backward of the sum of the outputs; no optimiser)
   of Vim-T, EfficientVMamba-T and EfficientViM-M1 backbones at 512², batch 8, per backend
   (``with use_backend(name)``): ms and peak memory. EfficientViM has no selective scan; it runs once.
5. ``inference``: Vim-Ti (classifier layout: middle class token, final norm) against a minimal DeiT-Ti
   (defined here, so neither mmpretrain nor timm is needed) at 512², 1024², 1248², batch 8, bf16 autocast,
   ``torch.inference_mode``: ms and peak memory. DeiT-Ti runs twice with the same weights: attention
   through ``F.scaled_dot_product_attention`` and written out as softmax(q kᵀ) v.
6. ``profile``: one inference forward of Vim-Ti and EfficientVMamba-T (1248², batch 8) per backend:
   kernel launches counted at dispatch (ATen ops doing work + Triton kernels, in fp32: a dispatch mode
   would bypass autocast; also on a CPU under the interpreter, where they show the fused path's effect
   without a GPU) and, on a GPU, the CUDA kernels the torch profiler saw under bf16 autocast with the
   device time of the top ones.

Timing: median of ``--repeats`` calls after ``--warmup`` untimed ones, each bracketed by
``torch.cuda.synchronize`` on a GPU (``time.perf_counter`` clock). Peak memory of the first (cold) call:
``torch.cuda.max_memory_allocated`` above what was allocated before on a GPU; on a CPU the rise of the
process's peak RSS (in-process, so memory freed by earlier rows and reused is not counted).

``--tiny`` shrinks every shape (width 8, L 33, 64² images, batch 1, one repeat) so the whole check runs in
seconds. On a CPU it also turns on Triton's interpreter (``TRITON_INTERPRET=1``, before mmvssm imports
Triton) so the ``triton`` backend is checked there too.

Needs torch, and mmengine for sections 4-6; Triton and mamba_ssm when present. Nothing else from OpenMMLab.
"""
import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)


def _sibling(name: str) -> ModuleType:
    """``tools/analysis_tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f'mmvssm_gpu_check_{name}', osp.join(HERE, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Shared with the other benchmarks: scan cases and inputs, timing and peak memory, the environment record
# and the backbone configs. Both import only the standard library at module level.
bench_scan = _sibling('benchmark_scan')
bench_backbones = _sibling('benchmark_backbones')
Case = bench_scan.Case

SECTIONS = ('environment', 'parity', 'scan', 'train', 'inference', 'profile')
TOLERANCE = {'fp32': 1e-4, 'bf16': 1e-2}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
ACTIVATIONS = ('u', 'delta', 'B', 'C', 'z')  # what autocast hands the scan in bf16 (the rest are fp32)


@dataclass(frozen=True)
class Settings:
    """Shapes and repeats of one run (:data:`FULL` or :data:`TINY`)."""
    parity_cases: Tuple[Case, ...]
    scan_cases: Tuple[Case, ...]
    train_models: Dict[str, Dict[str, Any]]  # label -> dict(cfg=..., scan=uses the selective scan)
    train_size: int
    train_batch: int
    vim_ti_arch: Any  # Vim's arch for the inference section ('tiny' or a dict)
    deit: Dict[str, int]  # MiniDeiT width/depth/heads
    inference_sizes: Tuple[int, ...]
    inference_batch: int
    copy_mib: int  # size of the bandwidth-measuring copy (at most 256 on a CPU)
    profile_size: int  # image size of the profile section (launch counts do not depend on it)
    warmup: int = 2
    repeats: int = 5


FULL = Settings(
    # Parity: several Triton chunks along L, and grouped B/C (as Vim's two directions in one call).
    parity_cases=(Case('parity-b2-d64-L300-N16', 2, 64, 300, 16),
                  Case('parity-b2-d64-L129-N16-G2', 2, 64, 129, 16, groups=2)),
    scan_cases=(Case('b16-d384-L1025-N16', 16, 384, 1025, 16), Case('b4-d384-L4097-N16', 4, 384, 4097, 16)),
    train_models={
        'Vim-T': dict(cfg=dict(type='Vim', arch='tiny'), scan=True),
        'EfficientVMamba-T': dict(cfg=dict(type='EfficientVMamba', arch='t'), scan=True),
        'EfficientViM-M1': dict(cfg=dict(type='EfficientViM', arch='m1'), scan=False),
    },
    train_size=512, train_batch=8,
    vim_ti_arch='tiny', deit=dict(dim=192, depth=12, heads=3),
    inference_sizes=(512, 1024, 1248), inference_batch=8,
    copy_mib=1024, profile_size=1248)

TINY = replace(
    FULL,
    parity_cases=(Case('tiny-b1-d8-L33-N4', 1, 8, 33, 4),
                  Case('tiny-b1-d8-L17-N4-G2', 1, 8, 17, 4, groups=2)),
    scan_cases=(Case('tiny-b1-d8-L33-N4', 1, 8, 33, 4), ),
    train_models={
        'Vim-T': dict(cfg=dict(type='Vim', arch=dict(embed_dims=8, depth=2), out_indices=(0, 1)),
                      scan=True),
        'EfficientVMamba-T': dict(cfg=dict(type='EfficientVMamba', arch=dict(dims=8, depths=[1, 1, 1, 1])),
                                  scan=True),
        'EfficientViM-M1': dict(cfg=dict(type='EfficientViM', arch=dict(
            embed_dims=(16, 16, 16), depths=(1, 1, 1), state_dims=(4, 4, 4))), scan=False),
    },
    train_size=32, train_batch=2,  # batch 2: EfficientViM's BatchNorm sees one value per channel at 1
    vim_ti_arch=dict(embed_dims=8, depth=2), deit=dict(dim=8, depth=2, heads=2),
    inference_sizes=(32, 64), inference_batch=1,
    copy_mib=16, profile_size=32, warmup=0, repeats=1)


# --------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------
def _error_text(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'[:300]


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def guarded(row: Dict[str, Any], fn: Callable[[], Dict[str, Any]], device: torch.device) -> Dict[str, Any]:
    """``row`` updated with ``fn()``'s results, or with ``error`` when it raises (OOM included)."""
    try:
        row.update(fn())
    except Exception as err:  # noqa: BLE001 (a failing row is a result, not a crash)
        row['error'] = _error_text(err)
    finally:
        _release(device)
    return row


def measure(fn: Callable[[], None], device: torch.device, settings: Settings) -> Dict[str, Any]:
    """Peak memory (MiB) of a first, cold call of ``fn``, then its median wall-clock ms."""
    peak = bench_scan._peak_memory_mib(fn, device)
    ms, _ = bench_scan._timed(fn, device, settings.warmup, settings.repeats)
    return dict(ms=ms, peak_mib=peak)


def copy_bandwidth_gbs(device: torch.device, mib: int, repeats: int = 3, copies: int = 10) -> float:
    """Device memory bandwidth in GB/s from a timed device-to-device copy (read + write)."""
    src = torch.ones(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)

    def copy() -> None:
        for _ in range(copies):
            dst.copy_(src)

    ms, _ = bench_scan._timed(copy, device, 1, repeats)
    return 2 * src.numel() * copies / (ms * 1e-3) / 1e9


def scan_bytes(case: Case, act_bytes: int, param_bytes: int = 4) -> Tuple[int, int]:
    """Least bytes a scan of ``case`` moves: (forward, forward + backward); see section 3."""
    b, d, length, n, g = case.batch, case.dim, case.length, case.n_state, case.groups
    inputs = (3 * b * d * length + 2 * b * g * n * length) * act_bytes + (d * n + 2 * d) * param_bytes
    output = b * d * length * act_bytes
    forward = inputs + output
    backward = inputs + output + inputs  # re-read the inputs and dy, write a gradient per input
    return forward, forward + backward


# --------------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------------
def _version(module: str) -> Optional[str]:
    """The installed distribution's version, else an imported module's ``__version__`` (e.g. mamba_ssm
    built in place and put on PYTHONPATH), else None."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get(module), '__version__', None)


def machine_label(device: torch.device, env: Dict[str, Any]) -> str:
    """GPU name and memory, or CPU model, ISA and threads: the label of every table."""
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        return f'{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}'
    return f"{env['cpu']}, {env['cpu_isa']}, {env['threads']} threads"


def environment(device: torch.device) -> Dict[str, Any]:
    """Section 1: versions, hardware, and the scan backends available and chosen on ``device``."""
    from mmvssm.ops import auto_backend, available_backends
    # lscpu, platform and the like, as recorded by the backbone benchmark (its 'auto' guess is ignored).
    base = bench_backbones.environment(str(device), None)
    available = list(available_backends(device))  # imports mamba_ssm where it can run
    env: Dict[str, Any] = dict(
        python=base['python'], torch=torch.__version__, triton=_version('triton'),
        cuda=torch.version.cuda, mamba_ssm=_version('mamba_ssm'), mmengine=_version('mmengine'),
        device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        cpu=base['lscpu'].get('Model name') or platform.processor() or platform.machine(),
        cpu_isa=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), triton_interpret=os.environ.get('TRITON_INTERPRET', ''),
        scan_backend_env=os.environ.get('MMVSSM_SCAN_BACKEND', ''),
        backends_available=available, auto_backend=auto_backend(device))
    if device.type == 'cuda' and env['triton_interpret'] == '1':
        env['warning'] = 'TRITON_INTERPRET=1: the triton backend runs in the interpreter, not on the GPU'
    return env


# --------------------------------------------------------------------------------------------------
# Section 2: parity against the float64 reference
# --------------------------------------------------------------------------------------------------
def scan_inputs(case: Case, device: torch.device, dtype: torch.dtype) -> Dict[str, Tensor]:
    """Mamba-like inputs (benchmark_scan's), activations in ``dtype``, A/D/delta_bias in float32."""
    inputs = bench_scan._make_inputs(case, device, requires_grad=False)
    return {k: v.to(dtype) if k in ACTIVATIONS else v for k, v in inputs.items()}


def _scan_with_grads(backend: str, inputs: Dict[str, Tensor], weights: Tuple[Tensor, Tensor],
                     with_state_grad: bool) -> Dict[str, Tensor]:
    """Output, last state and every input's gradient of loss = <y, wy> (+ <h, wh>)."""
    from mmvssm.ops import selective_scan
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y, h = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
    loss = (y.double() * weights[0]).sum()
    if with_state_grad:
        loss = loss + (h.double() * weights[1]).sum()
    loss.backward()
    return dict(y=y.detach(), last_state=h.detach(), **{f'd{k}': v.grad for k, v in leaves.items()})


def _relative_errors(got: Dict[str, Tensor], ref: Dict[str, Tensor]) -> Dict[str, float]:
    errors = {}
    for name, r in ref.items():
        g = got[name]
        if g is None:
            errors[name] = math.inf
            continue
        errors[name] = ((g.double() - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
    return errors


def parity(device: torch.device, settings: Settings, backends: Sequence[str]) -> List[Dict[str, Any]]:
    """Section 2: one row per (case, dtype, backend)."""
    rows = []
    for case in settings.parity_cases:
        g = torch.Generator().manual_seed(2)
        weights = (torch.randn(case.batch, case.dim, case.length, generator=g, dtype=torch.float64),
                   torch.randn(case.batch, case.dim, case.n_state, generator=g, dtype=torch.float64))
        weights = tuple(w.to(device) for w in weights)
        for dtype_name, dtype in DTYPES.items():
            inputs = scan_inputs(case, device, dtype)
            as_f64 = {k: v.double() for k, v in inputs.items()}
            reference: Dict[bool, Dict[str, Tensor]] = {}

            def ref(with_state_grad: bool) -> Dict[str, Tensor]:
                if with_state_grad not in reference:
                    reference[with_state_grad] = _scan_with_grads('reference', as_f64, weights,
                                                                  with_state_grad)
                return reference[with_state_grad]

            for backend in backends:
                row = dict(backend=backend, case=case.name, dtype=dtype_name,
                           tolerance=TOLERANCE[dtype_name])

                def check(backend=backend) -> Dict[str, Any]:
                    result: Dict[str, Any] = dict(last_state_grad=True)
                    try:
                        got = _scan_with_grads(backend, inputs, weights, with_state_grad=True)
                    except RuntimeError as err:  # e.g. mamba_ssm: no gradient through the last state
                        got = _scan_with_grads(backend, inputs, weights, with_state_grad=False)
                        result.update(last_state_grad=False, note=_error_text(err))
                    errors = _relative_errors(got, ref(result['last_state_grad']))
                    grads = {k: v for k, v in errors.items() if k.startswith('d')}
                    worst = max(grads, key=grads.get)
                    result.update(errors=errors, y_err=errors['y'], last_state_err=errors['last_state'],
                                  grad_err=grads[worst], worst_grad=worst,
                                  passed=max(errors.values()) < TOLERANCE[dtype_name])
                    return result

                row = guarded(row, check, device)
                row.setdefault('passed', False)
                row['result'] = 'pass' if row['passed'] else 'FAIL'
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Section 3: scan timing
# --------------------------------------------------------------------------------------------------
def scan_timing(device: torch.device, settings: Settings,
                backends: Sequence[str]) -> Tuple[List[Dict[str, Any]], float]:
    """Section 3: rows per (case, backend) and the measured bandwidth (GB/s)."""
    from mmvssm.ops import selective_scan
    bandwidth = copy_bandwidth_gbs(device, settings.copy_mib if device.type == 'cuda' else
                                   min(settings.copy_mib, 256))
    rows = []
    for case in settings.scan_cases:
        floor_fwd, floor_fwd_bwd = (n / (bandwidth * 1e9) * 1e3 for n in scan_bytes(case, act_bytes=2))
        for backend in backends:
            row = dict(backend=backend, case=case.name, floor_fwd_ms=floor_fwd,
                       floor_fwd_bwd_ms=floor_fwd_bwd)

            def run(backend=backend, case=case) -> Dict[str, Any]:
                inputs = scan_inputs(case, device, torch.bfloat16)
                leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
                dy = torch.randn(case.batch, case.dim, case.length, device=device, dtype=torch.bfloat16)

                def fwd() -> None:
                    with torch.no_grad():
                        selective_scan(**inputs, delta_softplus=True, backend=backend)

                def fwd_bwd() -> None:
                    selective_scan(**leaves, delta_softplus=True, backend=backend).backward(dy)
                    for t in leaves.values():
                        t.grad = None

                f, fb = measure(fwd, device, settings), measure(fwd_bwd, device, settings)
                return dict(fwd_ms=f['ms'], fwd_bwd_ms=fb['ms'], fwd_bwd_peak_mib=fb['peak_mib'])

            rows.append(guarded(row, run, device))
    return rows, bandwidth


# --------------------------------------------------------------------------------------------------
# Sections 4-5: backbones
# --------------------------------------------------------------------------------------------------
def build_model(cfg: Dict[str, Any]) -> nn.Module:
    """A backbone from its mmengine config (``import mmvssm`` registers them)."""
    import mmvssm  # noqa: F401
    from mmengine.registry import MODELS
    return MODELS.build(dict(cfg))


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_steps(device: torch.device, settings: Settings, backends: Sequence[str]) -> List[Dict[str, Any]]:
    """Section 4: one row per (backbone, backend); a backbone without a scan runs once."""
    from mmvssm.ops import use_backend
    rows = []
    size, batch = settings.train_size, settings.train_batch
    for label, spec in settings.train_models.items():
        for backend in (backends if spec['scan'] else ('-', )):
            row = dict(model=label, backend=backend, size=size, batch=batch)
            if backend == 'triton' and device.type == 'cpu':
                # minutes per step in the interpreter, and no speed to learn: the parity checks it
                rows.append(dict(row, note='skipped: Triton interpreter on the CPU'))
                continue

            def run(spec=spec, backend=backend) -> Dict[str, Any]:
                with use_backend(backend if spec['scan'] else 'auto'):
                    model = build_model(spec['cfg']).to(device).train()
                    x = torch.randn(batch, 3, size, size, device=device)

                    def step() -> None:
                        with _autocast(device):
                            outs = model(x)
                        sum(o.float().sum() for o in outs).backward()
                        model.zero_grad(set_to_none=True)

                    return measure(step, device, settings)

            rows.append(guarded(row, run, device))
    return rows


class _Attention(nn.Module):
    """Multi-head self-attention through SDPA, or written out (``explicit``) with the same weights."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.explicit = False

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if self.explicit:  # the (n, n) attention matrix is materialised, as in timm's DeiT
            out = ((q @ k.transpose(-2, -1)) * q.shape[-1]**-0.5).softmax(-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MiniDeiT(nn.Module):
    """DeiT-Ti's backbone (patch 16, width 192, 12 layers, 3 heads, MLP 4×, class token, learned position
    embedding for ``img_size``, final norm), returning the class token like Vim-Ti's classifier layout."""

    def __init__(self, img_size: int, dim: int = 192, depth: int = 12, heads: int = 3, patch: int = 16,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (img_size // patch)**2 + 1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def set_attention(self, explicit: bool) -> 'MiniDeiT':
        """SDPA (False) or explicit softmax(q kᵀ) v (True) in every block."""
        for block in self.blocks:
            block.attn.explicit = explicit
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def inference(device: torch.device, settings: Settings) -> List[Dict[str, Any]]:
    """Section 5: Vim-Ti (``auto`` backend) and DeiT-Ti (SDPA, explicit) per image size."""
    from mmvssm.ops import auto_backend
    vim_cfg = bench_backbones.MODELS['vim-ti']['cfg']  # the benchmark's classifier layout of Vim-Ti
    batch = settings.inference_batch
    rows = []
    for size in settings.inference_sizes:
        variants = (('Vim-Ti', auto_backend(device), None), ('DeiT-Ti (SDPA)', '-', False),
                    ('DeiT-Ti (explicit attn)', '-', True))
        for label, backend, explicit in variants:
            row = dict(model=label, backend=backend, size=size, batch=batch)

            def run(explicit=explicit, size=size) -> Dict[str, Any]:
                if explicit is None:
                    model = build_model(dict(vim_cfg, arch=settings.vim_ti_arch, img_size=size))
                else:
                    model = MiniDeiT(size, **settings.deit).set_attention(explicit)
                model = model.to(device).eval()
                x = torch.randn(batch, 3, size, size, device=device)

                def forward() -> None:
                    with torch.inference_mode(), _autocast(device):
                        model(x)

                return measure(forward, device, settings)

            rows.append(guarded(row, run, device))
    return rows


def _device_time_by_kernel(forward: Callable[[], None]) -> Dict[str, Any]:
    """CUDA kernels launched by ``forward`` and their device time (torch profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    forward()  # warm-up: compilation and autotuning are not profiled
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    times = {e.key: getattr(e, 'self_device_time_total', None) or e.self_cuda_time_total for e in kernels}
    top = sorted(times.items(), key=lambda kv: -kv[1])[:6]
    return dict(cuda_kernels=sum(e.count for e in kernels), device_ms=sum(times.values()) / 1e3,
                top_kernels=', '.join(f'{k[:40]} {t / 1e3:.2f} ms' for k, t in top))


def profile(device: torch.device, settings: Settings, backends: Sequence[str]) -> List[Dict[str, Any]]:
    """Section 6: kernel launches per inference forward (ATen ops + Triton kernels, counted at dispatch, so
    also on a CPU under the Triton interpreter) and, on a GPU, device time by kernel; per scan backend."""
    from mmvssm.ops import use_backend
    count_launches = _sibling('count_launches').count_launches
    size, batch = settings.profile_size, settings.inference_batch
    models = {'Vim-Ti': dict(bench_backbones.MODELS['vim-ti']['cfg'], arch=settings.vim_ti_arch,
                             img_size=size),
              'EfficientVMamba-T': settings.train_models['EfficientVMamba-T']['cfg']}
    rows = []
    for label, cfg in models.items():
        for backend in backends:
            row = dict(model=label, backend=backend, size=size, batch=batch)

            def run(cfg=cfg, backend=backend) -> Dict[str, Any]:
                with use_backend(backend):
                    model = build_model(cfg).to(device).eval()
                    x = torch.randn(batch, 3, size, size, device=device)

                    def forward() -> None:
                        with torch.inference_mode(), _autocast(device):
                            model(x)

                    # Without autocast: a dispatch mode intercepts composite ops before autocast
                    # casts their inputs (the GPU's profiler count below is under autocast).
                    with torch.inference_mode():
                        model(x)  # steady state: parameter-derived caches filled
                        with count_launches() as counts:
                            model(x)
                    result = dict(launches=sum(counts.values()),
                                  top_ops=', '.join(f'{k} {n}' for k, n in counts.most_common(5)))
                    if device.type == 'cuda':
                        result.update(_device_time_by_kernel(forward))
                    return result

            rows.append(guarded(row, run, device))
    return rows


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, (list, tuple)):
        return ', '.join(map(str, value))
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e5:
            return f'{value:.2f}'
        return f'{value:.1e}'
    return str(value)


def table(title: str, machine: str, columns: Sequence[Tuple[str, str]], rows: Sequence[Dict]) -> str:
    """A markdown table of ``rows`` (``columns``: (header, key)); a row's error or note fills the last
    cell."""
    header = [h for h, _ in columns] + ['note']
    cells = [[_cell(r.get(k)) for _, k in columns] + [r.get('error') or r.get('note') or ''] for r in rows]
    if not any(c[-1] for c in cells):
        header, cells = header[:-1], [c[:-1] for c in cells]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    lines = [f'### {title} ({machine})', '',
             '| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
             '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    lines += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(line, widths)) + ' |' for line in cells]
    return '\n'.join(lines)


COLUMNS = {
    'parity': [('backend', 'backend'), ('case', 'case'), ('dtype', 'dtype'), ('y err', 'y_err'),
               ('last state err', 'last_state_err'), ('max grad err', 'grad_err'), ('worst', 'worst_grad'),
               ('state grad', 'last_state_grad'), ('tol', 'tolerance'), ('result', 'result')],
    'scan': [('backend', 'backend'), ('case', 'case'), ('fwd ms', 'fwd_ms'), ('fwd+bwd ms', 'fwd_bwd_ms'),
             ('floor fwd ms', 'floor_fwd_ms'), ('floor f+b ms', 'floor_fwd_bwd_ms'),
             ('f+b peak MiB', 'fwd_bwd_peak_mib')],
    'train': [('model', 'model'), ('backend', 'backend'), ('size', 'size'), ('batch', 'batch'),
              ('step ms', 'ms'), ('peak MiB', 'peak_mib')],
    'inference': [('model', 'model'), ('backend', 'backend'), ('size', 'size'), ('batch', 'batch'),
                  ('ms', 'ms'), ('peak MiB', 'peak_mib')],
    'profile': [('model', 'model'), ('backend', 'backend'), ('size', 'size'), ('batch', 'batch'),
                ('launches', 'launches'), ('CUDA kernels', 'cuda_kernels'), ('device ms', 'device_ms'),
                ('top kernels (device time)', 'top_kernels'), ('top ops (launches)', 'top_ops')],
}
TITLES = {
    'environment': 'Environment',
    'parity': 'Parity vs float64 reference (max |x - ref| / max |ref|; values, last state, gradients)',
    'scan': 'Selective scan, bf16 activations (floor: bytes moved / measured copy bandwidth)',
    'train': 'Backbone train step, bf16 autocast, fwd+bwd of the outputs\' sum',
    'inference': 'Inference, bf16 autocast',
    'profile': 'Profile of one inference forward (launches: ATen ops + Triton kernels at dispatch, fp32; '
               'CUDA kernels and device time: torch profiler, bf16 autocast)',
}


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default=None, help='cuda[:i] or cpu (default: cuda when available)')
    parser.add_argument('--sections', nargs='+', choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument('--tiny', action='store_true', help='tiny shapes: the whole check in seconds')
    parser.add_argument('--warmup', type=int, default=None, help='untimed calls (default 2, tiny 0)')
    parser.add_argument('--repeats', type=int, default=None, help='timed calls, median (default 5, tiny 1)')
    parser.add_argument('--out', default=None, help='also write everything to this JSON file')
    return parser.parse_args(argv)


def run_section(name: str, device: torch.device, settings: Settings, machine: str,
                backends: Sequence[str]) -> Dict[str, Any]:
    """One section's record: its rows (and extras), or ``error`` when it failed as a whole."""
    record: Dict[str, Any] = dict(machine=machine)
    start = time.perf_counter()
    try:
        if name == 'parity':
            record['rows'] = parity(device, settings, backends)
        elif name == 'scan':
            record['rows'], record['bandwidth_gbs'] = scan_timing(device, settings, backends)
        elif name == 'train':
            record['rows'] = train_steps(device, settings, backends)
        elif name == 'inference':
            record['rows'] = inference(device, settings)
        elif name == 'profile':
            record['rows'] = profile(device, settings, backends)
    except Exception as err:  # noqa: BLE001 (e.g. mmengine missing: the other sections still run)
        record['error'] = _error_text(err)
    _release(device)
    record['seconds'] = time.perf_counter() - start
    return record


def render(name: str, record: Dict[str, Any], tiny: bool) -> str:
    """The terminal table of one section."""
    machine = record['machine']
    title = TITLES[name] + (', --tiny shapes' if tiny and name != 'environment' else '')
    if 'error' in record:
        return f'### {title} ({machine})\n\nfailed: {record["error"]}'
    if name == 'environment':
        rows = [dict(key=k, value=v) for k, v in record['values'].items()]
        return table(title, machine, [('', 'key'), ('value', 'value')], rows)
    if name == 'scan':
        title += f', copy bandwidth {record["bandwidth_gbs"]:.0f} GB/s'
    return table(title, machine, COLUMNS[name], record['rows'])


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    settings = TINY if args.tiny else FULL
    settings = replace(settings, warmup=settings.warmup if args.warmup is None else args.warmup,
                       repeats=settings.repeats if args.repeats is None else args.repeats)
    if args.tiny and device.type == 'cpu' and 'mmvssm.ops.triton_scan_kernels' not in sys.modules:
        # Check the triton backend's kernels too. Triton reads the variable when mmvssm defines them, so
        # it has no effect (other than breaking them) once they are defined.
        os.environ.setdefault('TRITON_INTERPRET', '1')

    env = environment(device)
    machine = machine_label(device, env)
    # Every backend but the float64 reference (too slow to time; it is the ground truth of the parity).
    backends = [b for b in env['backends_available'] if b != 'reference']
    results: Dict[str, Any] = dict(machine=machine, device=str(device), tiny=args.tiny,
                                   settings=asdict(settings))
    for name in args.sections:
        if name == 'environment':
            record = dict(machine=machine, values=env)
        else:
            record = run_section(name, device, settings, machine, backends)
        results[name] = record
        print(render(name, record, args.tiny) + '\n', flush=True)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == '__main__':
    main()
