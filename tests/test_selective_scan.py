"""Tests of ``mmvssm.ops.selective_scan``: every available backend against a float64 reference.

Plan and tolerances follow specs/scan.md §4: forward |y - y_ref| <= 1e-5 + 1e-4 |y_ref| in float32,
gradients within 1e-4 (relative to the largest reference gradient), float64 gradcheck of the blocked
Function on tiny shapes, strong-decay stress, dispatch and error handling.
"""
import importlib
import itertools
import sys
import types
import warnings
from typing import Dict, Optional

import pytest
import torch
from torch import Tensor

from mmvssm.ops import available_backends, multi_direction_scan, selective_scan, use_backend
from mmvssm.ops import chunked_scan, cuda_backend

# The package re-exports the function under the module's name, so fetch the module itself.
scan_module = importlib.import_module('mmvssm.ops.selective_scan')
backends = importlib.import_module('mmvssm.ops.backends')
reference_scan = importlib.import_module('mmvssm.ops.reference_scan')

# Every fast backend usable on CPU tensors (the reference is the ground truth, not a subject). Triton's
# interpreter is too slow for these sizes: test_scan_triton.py runs the same checks on smaller shapes.
BACKENDS = [name for name in available_backends('cpu') if name not in ('reference', 'triton')]
INPUT_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_inputs(batch: int = 2, dim: int = 8, length: int = 33, n_state: int = 4,
                groups: Optional[int] = None, use_d: bool = True, use_z: bool = True,
                use_bias: bool = True, delta_scale: float = 1.0, a_min: float = -4.0,
                dtype: torch.dtype = torch.float32, seed: int = 0) -> Dict[str, Optional[Tensor]]:
    """Mamba-like inputs: raw delta for softplus, A in [a_min, -0.1] (spread over the states)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    span = torch.rand(dim, n_state, generator=g, dtype=torch.float64)
    inputs = dict(
        u=randn(batch, dim, length),
        delta=randn(batch, dim, length) - 1.0,
        A=-(0.1 + span * (-a_min - 0.1)),
        B=randn(*bc_shape),
        C=randn(*bc_shape),
        D=randn(dim) if use_d else None,
        z=randn(batch, dim, length) if use_z else None,
        delta_bias=0.5 * randn(dim) if use_bias else None,
    )
    inputs['delta'] = inputs['delta'] * delta_scale
    return {k: None if v is None else v.to(dtype) for k, v in inputs.items()}


def run(inputs: Dict[str, Optional[Tensor]], backend: str, **kwargs):
    return selective_scan(*(inputs[k] for k in INPUT_NAMES), backend=backend, **kwargs)


def reference64(inputs: Dict[str, Optional[Tensor]], **kwargs):
    """The reference backend on the same values promoted to float64."""
    promoted = {k: None if v is None else v.detach().double() for k, v in inputs.items()}
    return run(promoted, 'reference', **kwargs)


def assert_close_to_ref(actual: Tensor, ref: Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    err = (actual.double() - ref).abs()
    bound = atol + rtol * ref.abs()
    assert torch.isfinite(actual).all()
    assert (err <= bound).all(), f'max error {err.max().item():.3g}, worst excess ' \
                                 f'{(err - bound).max().item():.3g}'


def with_grad(inputs: Dict[str, Optional[Tensor]]) -> Dict[str, Optional[Tensor]]:
    return {k: None if v is None else v.detach().clone().requires_grad_() for k, v in inputs.items()}


# --------------------------------------------------------------------------------------------------
# Forward accuracy
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('length', [1, 7, 197, 1025])
@pytest.mark.parametrize('n_state', [1, 16])
@pytest.mark.parametrize('full', [False, True], ids=['plain', 'all-options'])
def test_forward_lengths(backend, length, n_state, full):
    inputs = make_inputs(length=length, n_state=n_state, groups=2 if full else None, use_d=full,
                         use_z=full, use_bias=full)
    kwargs = dict(delta_softplus=True, return_last_state=full)
    out = run(inputs, backend, **kwargs)
    ref = reference64(inputs, **kwargs)
    if full:
        assert_close_to_ref(out[0], ref[0])
        assert_close_to_ref(out[1], ref[1])
    else:
        assert_close_to_ref(out, ref)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('use_d,use_z,use_bias,grouped,softplus,last',
                         list(itertools.product([False, True], repeat=6)))
def test_forward_options(backend, use_d, use_z, use_bias, grouped, softplus, last):
    inputs = make_inputs(length=37, groups=4 if grouped else None, use_d=use_d, use_z=use_z,
                         use_bias=use_bias)
    if not softplus:  # delta must be positive without softplus
        inputs['delta'] = torch.nn.functional.softplus(inputs['delta'])
    kwargs = dict(delta_softplus=softplus, return_last_state=last)
    out, ref = run(inputs, backend, **kwargs), reference64(inputs, **kwargs)
    for o, r in zip(out, ref) if last else [(out, ref)]:
        assert o.dtype == torch.float32
        assert_close_to_ref(o, r)


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------
def _grads(inputs, backend, last_weight: Optional[Tensor], y_weight: Tensor):
    out = run(inputs, backend, delta_softplus=True, return_last_state=last_weight is not None)
    if last_weight is None:
        loss = (out * y_weight).sum()
    else:
        loss = (out[0] * y_weight).sum() + (out[1] * last_weight).sum()
    names = [k for k in INPUT_NAMES if inputs[k] is not None]
    return dict(zip(names, torch.autograd.grad(loss, [inputs[k] for k in names])))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('length,n_state,groups,last', [(197, 16, None, True), (197, 16, 2, False),
                                                        (1025, 1, 2, True), (1, 3, None, True)])
def test_gradients_match_reference(backend, length, n_state, groups, last):
    base = make_inputs(batch=2, dim=8, length=length, n_state=n_state, groups=groups)
    g = torch.Generator().manual_seed(1)
    y_weight = torch.randn(2, 8, length, generator=g, dtype=torch.float64)
    last_weight = torch.randn(2, 8, n_state, generator=g, dtype=torch.float64) if last else None
    grads = _grads(with_grad(base), backend, None if last_weight is None else last_weight.float(),
                   y_weight.float())
    base64 = {k: None if v is None else v.double() for k, v in base.items()}
    ref = _grads(with_grad(base64), 'reference', last_weight, y_weight)
    for name, r in ref.items():
        err = (grads[name].double() - r).abs().max() / r.abs().max().clamp_min(1e-12)
        assert err <= 1e-4, f'd{name}: relative error {err.item():.3g}'


@pytest.mark.parametrize('length', [1, 3, 4, 5, 9])
@pytest.mark.parametrize('batch,dim,n_state,groups', [(1, 2, 1, None), (2, 4, 3, 2), (1, 6, 2, None)])
def test_chunked_gradcheck(monkeypatch, length, batch, dim, n_state, groups):
    """float64 gradcheck with blocks of K=4 steps: L < K, L = K, L = K+1 and a ragged 2K+1."""
    monkeypatch.setattr(chunked_scan, '_MAX_BLOCK', 4)
    assert chunked_scan.block_length(batch * dim * n_state, 100) == 4
    inputs = with_grad(make_inputs(batch, dim, length, n_state, groups, dtype=torch.float64,
                                   seed=length))
    h0 = torch.randn(batch, dim, n_state, dtype=torch.float64, requires_grad=True)

    def fn(*args):
        return chunked_scan.selective_scan_chunked(*args[:8], True, True, initial_state=args[8])

    args = tuple(inputs[k] for k in INPUT_NAMES) + (h0, )
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)
    y, last = fn(*args)
    y_ref, last_ref = run(inputs, 'reference', delta_softplus=True, return_last_state=True)
    # The reference has no initial state: compare with h0 = 0 for the forward values.
    y0, last0 = chunked_scan.selective_scan_chunked(*args[:8], True, True)
    torch.testing.assert_close(y0, y_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(last0, last_ref, atol=1e-12, rtol=1e-10)


def test_chunked_split_sequence_matches_full():
    """Scanning two halves, seeding the second with the first's last state, equals one full scan."""
    inputs = make_inputs(length=50, groups=2, use_z=False, use_d=False)
    args = [inputs[k] for k in INPUT_NAMES]
    full, last = chunked_scan.selective_scan_chunked(*args, True, True)

    def time_slice(part):  # split the (…, L) tensors, keep the parameters
        return [t[..., part] if t is not None and t.dim() >= 3 else t for t in args]

    cut = 23
    first, second = time_slice(slice(None, cut)), time_slice(slice(cut, None))
    y1, h1 = chunked_scan.selective_scan_chunked(*first, True, True)
    y2, h2 = chunked_scan.selective_scan_chunked(*second, True, True, initial_state=h1)
    torch.testing.assert_close(torch.cat([y1, y2], -1), full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h2, last, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Stress, dtypes, layouts, determinism
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', BACKENDS)
def test_strong_decay_long_sequence(backend):
    """L = 8192, delta x20 and A down to -100: decays underflow to 0, nothing may overflow."""
    inputs = with_grad(make_inputs(batch=1, dim=4, length=8192, n_state=4, use_z=False,
                                   delta_scale=20.0, a_min=-100.0))
    y, last = run(inputs, backend, delta_softplus=True, return_last_state=True)
    ref_y, ref_last = reference64(inputs, delta_softplus=True, return_last_state=True)
    assert_close_to_ref(y, ref_y)
    assert_close_to_ref(last, ref_last)
    y.square().sum().backward()
    for name in INPUT_NAMES:
        if inputs[name] is not None:
            assert torch.isfinite(inputs[name].grad).all(), f'non-finite d{name}'


@pytest.mark.parametrize('backend', BACKENDS)
def test_accumulator_long_sequence(backend):
    """delta -> 0 makes every decay ~1 (a pure accumulator): the error must not grow with L = 4096."""
    inputs = make_inputs(batch=1, dim=4, length=4096, n_state=4, use_bias=False)
    inputs['delta'] = torch.full_like(inputs['delta'], 1e-4)
    inputs['A'] = inputs['A'] * 1e-2
    y = run(inputs, backend)
    assert_close_to_ref(y, reference64(inputs))


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('wanted', [('u', ), ('A', 'delta_bias'), ('B', 'C', 'z')])
def test_gradients_for_a_subset_of_inputs(backend, wanted):
    inputs = make_inputs(length=19, groups=2)
    grad_inputs = {k: v.detach().clone().requires_grad_(k in wanted) for k, v in inputs.items()}
    y = run(grad_inputs, backend, delta_softplus=True)
    grads = torch.autograd.grad(y.sum(), [grad_inputs[k] for k in wanted])
    ref_inputs = {k: v.double().requires_grad_(k in wanted) for k, v in inputs.items()}
    ref = torch.autograd.grad(run(ref_inputs, 'reference', delta_softplus=True).sum(),
                              [ref_inputs[k] for k in wanted])
    for g, r in zip(grads, ref):
        assert_close_to_ref(g, r)


@pytest.mark.parametrize('backend', BACKENDS)
def test_zero_input_gives_zero_output(backend):
    inputs = with_grad(dict(make_inputs(length=19), u=torch.zeros(2, 8, 19)))
    y, last = run(inputs, backend, delta_softplus=True, return_last_state=True)
    assert torch.equal(y, torch.zeros_like(y)) and torch.equal(last, torch.zeros_like(last))
    y.sum().backward()
    assert torch.isfinite(inputs['u'].grad).all() and inputs['u'].grad.abs().sum() > 0


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_inputs(backend, dtype):
    inputs = make_inputs(length=197, n_state=16, groups=2, dtype=dtype)
    out = run(inputs, backend, delta_softplus=True)
    assert out.dtype == dtype
    # fp32 compute on the same (rounded) values: only the output rounding may differ.
    exact = run({k: None if v is None else v.float() for k, v in inputs.items()}, backend,
                delta_softplus=True)
    eps = torch.finfo(dtype).eps
    assert ((out.float() - exact).abs() <= eps * exact.abs() + 1e-6).all()
    grad_inputs = with_grad(inputs)
    run(grad_inputs, backend, delta_softplus=True).float().sum().backward()
    assert grad_inputs['u'].grad.dtype == dtype and torch.isfinite(grad_inputs['B'].grad).all()


@pytest.mark.parametrize('backend', BACKENDS)
def test_autocast_keeps_float32(backend):
    """Under CPU autocast the scan still runs in float32 (decays near 1 are not representable in bf16)."""
    inputs = make_inputs(length=64, n_state=16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = run(inputs, backend, delta_softplus=True)
    assert out.dtype == torch.float32
    assert_close_to_ref(out, reference64(inputs, delta_softplus=True))


@pytest.mark.parametrize('backend', BACKENDS)
def test_non_contiguous_inputs(backend):
    inputs = make_inputs(length=45, n_state=16, groups=2)
    # Same values in transposed storage (time-major, like x_proj outputs; A column-major).
    strided = {name: t.movedim(-1, 0).contiguous().movedim(0, -1) if t.dim() >= 2 else t
               for name, t in inputs.items()}
    assert not strided['u'].is_contiguous() and not strided['B'].is_contiguous()
    assert not strided['A'].is_contiguous()
    out = run(strided, backend, delta_softplus=True)
    assert_close_to_ref(out, reference64(inputs, delta_softplus=True))
    # Vectorised and strided elementwise kernels may round differently, nothing more.
    torch.testing.assert_close(out, run(inputs, backend, delta_softplus=True), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('backend', BACKENDS)
def test_deterministic(backend):
    inputs = make_inputs(batch=2, dim=16, length=197, n_state=16)
    results = []
    for _ in range(2):
        grad_inputs = with_grad(inputs)
        y = run(grad_inputs, backend, delta_softplus=True)
        y.square().sum().backward()
        results.append([y] + [grad_inputs[k].grad for k in INPUT_NAMES])
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# Multi-direction scans
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', BACKENDS)
def test_multi_direction_equals_separate_scans(backend):
    k, batch, dim, length, n = 3, 2, 8, 29, 4
    per_dir = [make_inputs(batch, dim, length, n, seed=s) for s in range(k)]
    stacked = {name: None if per_dir[0][name] is None else torch.stack([p[name] for p in per_dir],
                                                                       dim=1 if per_dir[0][name].dim() >= 3
                                                                       else 0)
               for name in INPUT_NAMES}
    y = multi_direction_scan(*(stacked[n_] for n_ in INPUT_NAMES), delta_softplus=True, backend=backend)
    assert y.shape == (batch, k, dim, length)
    for i, p in enumerate(per_dir):
        torch.testing.assert_close(y[:, i], run(p, backend, delta_softplus=True), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('backend', BACKENDS)
def test_vim_bidirectional_flip_round_trip(backend):
    """Vim: direction 2 scans the flipped sequence; flipping its output back gives the backward scan."""
    fwd, bwd = make_inputs(seed=0), make_inputs(seed=1)
    flip = {k: None if v is None else (v.flip(-1) if v.dim() >= 3 else v) for k, v in bwd.items()}
    stacked = {k: None if fwd[k] is None else torch.stack([fwd[k], flip[k]],
                                                          dim=1 if fwd[k].dim() >= 3 else 0)
               for k in INPUT_NAMES}
    y = multi_direction_scan(*(stacked[k] for k in INPUT_NAMES), delta_softplus=True, backend=backend)
    y_bwd = y[:, 1].flip(-1)
    # Backward-in-time scan written directly: the reference on reversed time, reversed back.
    expected = reference64(flip, delta_softplus=True).flip(-1)
    assert_close_to_ref(y_bwd, expected)
    assert_close_to_ref(y[:, 0], reference64(fwd, delta_softplus=True))


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------
BAD_INPUTS = {
    'u-2d': (dict(u=torch.zeros(8, 33)), 'u', r'\(batch, dim, L\)'),
    'delta-length': (dict(delta=torch.zeros(2, 8, 32)), 'delta', r'\(batch, dim, L\) = \(2, 8, 33\)'),
    'A-dim': (dict(A=torch.zeros(7, 4)), 'A', r'\(dim, N\)'),
    'B-state': (dict(B=torch.zeros(2, 5, 33)), 'B', r'\(batch, N, L\) = \(2, 4, 33\)'),
    'C-groups': (dict(C=torch.zeros(2, 2, 4, 33)), 'C', r'\(batch, N, L\) = \(2, 4, 33\)'),
    'B-bad-groups': (dict(B=torch.zeros(2, 3, 4, 33), C=torch.zeros(2, 3, 4, 33)), 'B', 'divide dim'),
    'D-shape': (dict(D=torch.zeros(8, 1)), 'D', r'\(dim,\) = \(8,\)'),
    'z-shape': (dict(z=torch.zeros(2, 8, 34)), 'z', r'\(batch, dim, L\) = \(2, 8, 33\)'),
    'bias-shape': (dict(delta_bias=torch.zeros(4)), 'delta_bias', r'\(dim,\) = \(8,\)'),
    'u-int': (dict(u=torch.zeros(2, 8, 33, dtype=torch.int64)), 'u', 'floating-point'),
    'A-complex': (dict(A=torch.zeros(8, 4, dtype=torch.complex64)), 'A', 'real'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_inputs_raise(case):
    override, name, expected = BAD_INPUTS[case]
    inputs = dict(make_inputs(), **override)
    with pytest.raises(ValueError, match=rf'`{name}`.*{expected}'):
        run(inputs, 'auto', delta_softplus=True)


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def call_log(monkeypatch):
    """Records which backend implementation ran."""
    log = []

    def spy(name, module, attr):
        real = getattr(module, attr)

        def wrapper(*args, **kwargs):
            log.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attr, wrapper)

    spy('reference', reference_scan, 'scan_reference')
    spy('chunked', chunked_scan, 'selective_scan_chunked')
    return log


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="unknown backend 'fast'.*choose one of"):
        run(make_inputs(), 'fast')


def test_explicit_unavailable_backend_raises(monkeypatch, call_log):
    from mmvssm.ops import cpu_backend
    monkeypatch.setattr(cpu_backend, 'is_available', lambda: False)
    assert available_backends('cpu')[:2] == ('reference', 'chunked')
    assert 'cuda' not in available_backends('cpu')
    for name in ('cpu', 'cuda'):  # cuda never runs CPU tensors
        with pytest.raises(RuntimeError, match=f"backend '{name}' was requested.*not available"):
            run(make_inputs(), name)
    assert call_log == []  # no silent fallback


@pytest.mark.parametrize('forced', ['reference', 'chunked'])
def test_env_var_forces_backend(monkeypatch, call_log, forced):
    monkeypatch.setenv(scan_module.ENV_BACKEND, forced.upper())
    run(make_inputs(), 'auto')
    assert call_log == [forced]
    # An explicit backend argument wins over the variable.
    other = 'chunked' if forced == 'reference' else 'reference'
    run(make_inputs(), other)
    assert call_log == [forced, other]


def test_env_var_errors(monkeypatch):
    monkeypatch.setenv(scan_module.ENV_BACKEND, 'fastest')
    with pytest.raises(ValueError, match=r"unknown backend 'fastest' \(from \$MMVSSM_SCAN_BACKEND\)"):
        run(make_inputs(), 'auto')
    monkeypatch.setenv(scan_module.ENV_BACKEND, 'cuda')
    with pytest.raises(RuntimeError, match=r"'cuda' was requested \(\$MMVSSM_SCAN_BACKEND\)"):
        run(make_inputs(), 'auto')


def test_auto_prefers_cpu_kernel_then_chunked(monkeypatch, call_log):
    from mmvssm.ops import cpu_backend
    monkeypatch.delenv(scan_module.ENV_BACKEND, raising=False)
    monkeypatch.setattr(cpu_backend, 'is_available', lambda: False)
    run(make_inputs(), 'auto')
    assert call_log == ['chunked']
    monkeypatch.setattr(cpu_backend, 'is_available', lambda: True)
    monkeypatch.setattr(cpu_backend, 'selective_scan_cpu', lambda *a: call_log.append('cpu'))
    run(make_inputs(), 'auto')
    assert call_log == ['chunked', 'cpu']


# --------------------------------------------------------------------------------------------------
# cuda backend logic (no GPU here: a fake mamba_ssm stands in for the kernel)
# --------------------------------------------------------------------------------------------------
class _FakeKernel:
    """Stands in for mamba_ssm's selective_scan_fn: checks the call conventions, returns the reference."""

    # Bound at import, so that spying on the dispatcher's reference does not see the fake's calls.
    reference = staticmethod(reference_scan.scan_reference)

    def __init__(self):
        self.calls = []

    def __call__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        self.calls.append(dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias))
        out, last = self.reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True)
        return (out, last.float()) if return_last_state else out


def _install_fake_mamba(monkeypatch, kernel_ext=object()):
    fake = _FakeKernel()
    interface = types.ModuleType('mamba_ssm.ops.selective_scan_interface')
    interface.selective_scan_fn = fake
    interface.selective_scan_cuda = kernel_ext
    ops = types.ModuleType('mamba_ssm.ops')
    ops.selective_scan_interface = interface
    pkg = types.ModuleType('mamba_ssm')
    pkg.ops = ops
    for name, mod in (('mamba_ssm', pkg), ('mamba_ssm.ops', ops),
                      ('mamba_ssm.ops.selective_scan_interface', interface)):
        monkeypatch.setitem(sys.modules, name, mod)
    cuda_backend._load_kernel.cache_clear()
    return fake


@pytest.fixture
def fresh_kernel_cache():
    cuda_backend._load_kernel.cache_clear()
    yield
    cuda_backend._load_kernel.cache_clear()


def test_cuda_kernel_loading(monkeypatch, fresh_kernel_cache):
    fake = _install_fake_mamba(monkeypatch)
    assert cuda_backend._load_kernel() is fake
    # A wheel without the compiled extension is unusable.
    _install_fake_mamba(monkeypatch, kernel_ext=None)
    assert cuda_backend._load_kernel() is None


def test_cuda_import_failure_is_not_available(monkeypatch, fresh_kernel_cache):
    class BrokenFinder:
        """Import of mamba_ssm fails with a non-ImportError, like a build with undefined symbols."""

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.split('.')[0] == 'mamba_ssm':
                raise OSError('undefined symbol: _ZN3c10...')
            return None

    for name in ('mamba_ssm', 'mamba_ssm.ops', 'mamba_ssm.ops.selective_scan_interface'):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, 'meta_path', [BrokenFinder()] + sys.meta_path)
    assert cuda_backend._load_kernel() is None
    assert not cuda_backend.is_available()
    with pytest.raises(RuntimeError, match='not importable.*pip install mamba-ssm'):
        cuda_backend.selective_scan_cuda(*(make_inputs()[k] for k in INPUT_NAMES))


def test_cuda_unsupported_reasons():
    u, A = torch.zeros(1, 4, 8), torch.zeros(4, 16)
    assert 'float64' in cuda_backend.unsupported_reason(u.double(), A)
    assert 'N <= 256' in cuda_backend.unsupported_reason(u, torch.zeros(4, 257))
    assert 'CUDA tensors' in cuda_backend.unsupported_reason(u, A)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_call_conventions(monkeypatch, fresh_kernel_cache, dtype):
    """Casts and layouts handed to the kernel: u/delta/B/C/z in u's dtype, A/D/delta_bias fp32, contiguous."""
    fake = _install_fake_mamba(monkeypatch)
    monkeypatch.setattr(cuda_backend, 'unsupported_reason', lambda u, A: None)  # pretend u is on CUDA
    inputs = make_inputs(groups=2, dtype=dtype)
    inputs['delta'] = inputs['delta'].double()  # a different dtype than u
    inputs['B'] = inputs['B'].movedim(-1, 0).contiguous().movedim(0, -1)  # non-contiguous
    y, last = cuda_backend.selective_scan_cuda(*(inputs[k] for k in INPUT_NAMES), True, True)
    (call, ) = fake.calls
    for name in ('u', 'delta', 'B', 'C', 'z'):
        assert call[name].dtype == dtype, name
    for name in ('A', 'D', 'delta_bias'):
        assert call[name].dtype == torch.float32, name
    assert all(t.is_contiguous() for t in call.values())
    assert call['B'].shape == (2, 2, 4, 33)  # grouped B/C pass through unchanged
    assert y.dtype == dtype and last.dtype == dtype


def test_auto_dispatch_with_cuda(monkeypatch, fresh_kernel_cache, call_log):
    """auto picks cuda when it can run the inputs, falls back otherwise; explicit cuda never falls back."""
    fake = _install_fake_mamba(monkeypatch)
    monkeypatch.delenv(scan_module.ENV_BACKEND, raising=False)
    monkeypatch.setattr(cuda_backend, 'is_available', lambda: True)
    # Pretend the CPU is the kernel's device (and a GPU for auto) so the real N / dtype checks decide.
    monkeypatch.setattr(backends.CUDA, 'device_types', frozenset({'cpu'}))
    monkeypatch.setattr(backends.CUDA, 'auto_rank', {'cpu': 10})
    monkeypatch.setattr(backends.CPU, 'auto_rank', {})
    monkeypatch.setattr(cuda_backend, 'unsupported_reason',
                        lambda u, A, real=cuda_backend.unsupported_reason:
                        real(u, A) if u.dtype == torch.float64 or A.shape[-1] > 256 else None)
    run(make_inputs(n_state=16), 'auto')
    assert len(fake.calls) == 1 and call_log == []
    big = make_inputs(n_state=300, batch=1, dim=2, length=3)
    assert_close_to_ref(run(big, 'auto'), reference64(big))
    assert len(fake.calls) == 1  # N > 256: the kernel was skipped
    with pytest.raises(RuntimeError, match=r"'cuda' was requested.*N = 300.*N <= 256"):
        run(make_inputs(n_state=300, batch=1, dim=2, length=3), 'cuda')


def test_cuda_last_state_gradient_is_refused(monkeypatch, fresh_kernel_cache):
    """mamba_ssm's kernel drops the last state's gradient: a backward through it must fail loudly."""
    _install_fake_mamba(monkeypatch)
    monkeypatch.setattr(cuda_backend, 'unsupported_reason', lambda u, A: None)
    inputs = with_grad(make_inputs())
    y, last = cuda_backend.selective_scan_cuda(*(inputs[k] for k in INPUT_NAMES), True, True)
    y.sum().backward()  # the output alone is fine
    y, last = cuda_backend.selective_scan_cuda(*(inputs[k] for k in INPUT_NAMES), True, True)
    with pytest.raises(RuntimeError, match='cannot backpropagate through the returned last state.*triton'):
        (y.sum() + last.sum()).backward()


# --------------------------------------------------------------------------------------------------
# auto on GPUs, use_backend
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def cpu_as_gpu(monkeypatch):
    """auto treats CPU tensors as a GPU's: the GPU order, and chunked announced there."""
    monkeypatch.delenv(scan_module.ENV_BACKEND, raising=False)
    for backend in backends.REGISTRY.values():
        rank = backend.auto_rank.get('cuda', backend.auto_rank.get('*'))
        monkeypatch.setattr(backend, 'auto_rank', {} if rank is None else {'cpu': rank})
    monkeypatch.setattr(backends.CHUNKED, 'slow_on', {'cpu': backends.CHUNKED.slow_on['cuda']})
    monkeypatch.setattr(backends, '_warned_slow', set())


def only_available(monkeypatch, names):
    """Every backend reports itself available exactly when its name is in ``names`` (a mutable list)."""
    for backend in backends.REGISTRY.values():
        monkeypatch.setattr(backend, 'is_available', lambda device=None, name=backend.name: name in names)


def test_auto_gpu_order_cuda_then_triton_then_chunked(monkeypatch, cpu_as_gpu, call_log):
    from mmvssm.ops import triton_backend
    available = []
    only_available(monkeypatch, available)
    for name, module, attr in (('cuda', cuda_backend, 'selective_scan_cuda'),
                               ('triton', triton_backend, 'selective_scan_triton')):
        monkeypatch.setattr(module, attr, lambda *a, name=name: call_log.append(name))
        monkeypatch.setattr(module, 'unsupported_reason', lambda u, A: None)
    for names, expected in ((('cuda', 'triton', 'chunked'), 'cuda'),
                            (('triton', 'chunked'), 'triton'), (('chunked', ), 'chunked')):
        available[:] = names
        call_log.clear()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            run(make_inputs(), 'auto')
        assert call_log == [expected]
        assert scan_module.auto_backend('cpu') == expected


def test_chunked_on_gpu_is_announced_once(monkeypatch, cpu_as_gpu, call_log):
    only_available(monkeypatch, ['chunked'])
    with pytest.warns(RuntimeWarning, match=r'37x slower.*pip install triton'):
        run(make_inputs(), 'auto')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        run(make_inputs(), 'auto')  # once per process
        run(make_inputs(), 'chunked')  # an explicit choice is never announced
    assert call_log == ['chunked'] * 3


def test_use_backend_globally_and_as_context(monkeypatch, call_log):
    monkeypatch.delenv(scan_module.ENV_BACKEND, raising=False)
    monkeypatch.setattr(backends, '_selected_backend', None)
    with use_backend('reference'):
        run(make_inputs(), 'auto')
        assert scan_module.auto_backend('cpu') == 'reference'
        run(make_inputs(), 'chunked')  # the explicit argument wins
    assert call_log == ['reference', 'chunked']
    # It wins over the environment variable, and sets the choice for good when not used as a context.
    monkeypatch.setenv(scan_module.ENV_BACKEND, 'chunked')
    use_backend('reference')
    run(make_inputs(), 'auto')
    use_backend('auto')
    run(make_inputs(), 'auto')
    assert call_log == ['reference', 'chunked', 'reference', 'chunked']
    with pytest.raises(ValueError, match=r"unknown backend 'fastest' \(from use_backend\(\)\)"):
        use_backend('fastest')
