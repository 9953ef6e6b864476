"""Tests of the fused CPU selective-scan kernel (``backend='cpu'``, mmvssm/ops/csrc).

Ground truth is the ``reference`` backend run on float64 copies of the inputs. The module FAILS when the
extension is not built (CI builds it); set MMVSSM_WITH_CPU_KERNEL=0 to skip it on purpose.
"""
import os
import subprocess
import sys

import pytest
import torch

from conftest import load_tool
from mmvssm.ops import available_backends, selective_scan
from mmvssm.ops import cpu_backend

if os.environ.get('MMVSSM_WITH_CPU_KERNEL', '1') == '0':
    pytest.skip('MMVSSM_WITH_CPU_KERNEL=0: the fused CPU kernel is not built on purpose',
                allow_module_level=True)

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def _ext():
    return cpu_backend.extension()  # raises with the build instructions when missing


def make_inputs(batch=2, dim=4, length=7, n_state=16, groups=None, dtype=torch.float32, seed=0,
                delta_scale=0.5, a_max=4.0, with_d=True, with_z=True, with_bias=True):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    u = rnd(batch, dim, length)
    delta = rnd(batch, dim, length) * delta_scale
    A = -(torch.rand(dim, n_state, generator=g, dtype=torch.float64) * a_max + 0.05)
    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    B, C = rnd(*bc_shape), rnd(*bc_shape)
    D = rnd(dim) if with_d else None
    z = rnd(batch, dim, length) if with_z else None
    bias = rnd(dim) * 0.3 if with_bias else None
    return [None if t is None else t.to(dtype) for t in (u, delta, A, B, C, D, z, bias)]


def run(inputs, backend, softplus=True, last=True, grad_seed=None):
    """Forward (and, when grad_seed is given, backward with random cotangents) of one backend."""
    xs = [None if t is None else t.detach().clone().requires_grad_(grad_seed is not None)
          for t in inputs]
    res = selective_scan(*xs, delta_softplus=softplus, return_last_state=last, backend=backend)
    out, st = res if last else (res, None)
    grads = None
    if grad_seed is not None:
        gen = torch.Generator().manual_seed(grad_seed)
        loss = (out.double() * torch.randn(out.shape, generator=gen, dtype=torch.float64)).sum()
        if st is not None:
            loss = loss + (st.double() * torch.randn(st.shape, generator=gen,
                                                     dtype=torch.float64)).sum()
        loss.backward()
        grads = {n: x.grad for n, x in zip(NAMES, xs) if x is not None}
    return out.detach(), None if st is None else st.detach(), grads


def reference64(inputs, **kw):
    return run([None if t is None else t.double() for t in inputs], 'reference', **kw)


def assert_close_fp32(actual, expected, what):
    actual, expected = actual.double(), expected.double()
    bound = 1e-5 + 1e-4 * expected.abs()
    err = (actual - expected).abs()
    assert torch.isfinite(actual).all(), f'{what}: non-finite values'
    assert (err <= bound).all(), (f'{what}: max |err| {err.max().item():.3e}, worst ratio '
                                  f'{(err / bound).max().item():.2f}')


def assert_grad_close(actual, expected, what, rtol=1e-4):
    """Gradients: error relative to the gradient's scale (sums over L/channels cancel)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual - expected).abs().max() / scale
    assert torch.isfinite(actual).all(), f'{what}: non-finite gradient'
    assert err <= rtol, f'{what}: relative max error {err.item():.3e} > {rtol}'


# ----------------------------------------------------------------------------------------------------
def test_extension_is_built_and_dispatched():
    ext = _ext()
    assert cpu_backend.is_available()
    assert 'cpu' in available_backends('cpu')
    assert 'cpu' not in available_backends('meta')
    assert ext.isa() in ext.available_isas()
    u, delta, A, B, C, *_ = make_inputs(length=5)
    # auto picks the fused kernel for CPU tensors: bitwise equal to the explicit backend.
    assert torch.equal(selective_scan(u, delta, A, B, C), selective_scan(u, delta, A, B, C,
                                                                         backend='cpu'))


@pytest.mark.parametrize('length', [1, 7, 197, 1025])
@pytest.mark.parametrize('n_state', [1, 16])
def test_forward_matches_reference(length, n_state):
    inputs = make_inputs(batch=2, dim=4, length=length, n_state=n_state, seed=length + n_state)
    out, st, _ = run(inputs, 'cpu')
    ref, ref_st, _ = reference64(inputs)
    assert out.dtype == torch.float32 and out.shape == (2, 4, length)
    assert st.shape == (2, 4, n_state)
    assert_close_fp32(out, ref, 'out')
    assert_close_fp32(st, ref_st, 'last_state')


@pytest.mark.parametrize('options', [
    dict(with_d=False, with_z=False, with_bias=False, softplus=False),
    dict(with_d=True, with_z=False, with_bias=True, softplus=False),
    dict(with_d=False, with_z=True, with_bias=False, softplus=True),
])
def test_forward_optional_inputs(options):
    softplus = options.pop('softplus')
    inputs = make_inputs(batch=2, dim=6, length=130, n_state=5, **options)
    if not softplus:
        inputs[1] = inputs[1].abs()  # a positive delta without softplus
    out, _, _ = run(inputs, 'cpu', softplus=softplus, last=False)
    ref, _, _ = reference64(inputs, softplus=softplus, last=False)
    assert_close_fp32(out, ref, 'out')


@pytest.mark.parametrize('n_state', [2, 3, 8, 16, 40])
def test_grouped_bc_and_general_state_sizes(n_state):
    inputs = make_inputs(batch=2, dim=6, length=70, n_state=n_state, groups=3, seed=n_state)
    out, st, grads = run(inputs, 'cpu', grad_seed=1)
    ref, ref_st, ref_grads = reference64(inputs, grad_seed=1)
    assert_close_fp32(out, ref, 'out')
    assert_close_fp32(st, ref_st, 'last_state')
    for name in NAMES:
        assert grads[name].shape == inputs[NAMES.index(name)].shape
        assert_grad_close(grads[name], ref_grads[name], f'grad {name}')


@pytest.mark.parametrize('length', [1, 7, 197, 1025])
@pytest.mark.parametrize('n_state', [1, 16])
def test_gradients_match_reference(length, n_state):
    inputs = make_inputs(batch=2, dim=4, length=length, n_state=n_state, seed=3 * length)
    _, _, grads = run(inputs, 'cpu', grad_seed=7)
    _, _, ref_grads = reference64(inputs, grad_seed=7)
    for name in NAMES:
        assert grads[name].dtype == torch.float32
        assert_grad_close(grads[name], ref_grads[name], f'grad {name}')


@pytest.mark.parametrize('batch,dim,length,n_state,groups,last', [
    (2, 4, 1, 3, None, True), (2, 4, 5, 3, None, False), (2, 4, 7, 2, 2, True),
    (1, 2, 66, 2, 2, True)])
def test_gradcheck_float64(batch, dim, length, n_state, groups, last):
    # length 66 > one 64-step chunk: exercises the checkpoint + recompute path of the backward.
    inputs = make_inputs(batch=batch, dim=dim, length=length, n_state=n_state, groups=groups,
                         dtype=torch.float64, seed=length)
    xs = [t.clone().requires_grad_() for t in inputs]

    def fn(*args):
        return selective_scan(*args, delta_softplus=True, return_last_state=last, backend='cpu')

    assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_partial_requires_grad_and_no_grad():
    inputs = make_inputs(length=33, n_state=4)
    u, delta, A, B, C, D, z, bias = [t.clone() for t in inputs]
    A.requires_grad_()
    out = selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True, backend='cpu')
    out.sum().backward()
    ref = [t.double() for t in inputs]
    ref[2].requires_grad_()
    selective_scan(*ref, delta_softplus=True, backend='reference').sum().backward()
    assert_grad_close(A.grad, ref[2].grad, 'grad A')
    with torch.no_grad():
        y = selective_scan(*inputs, delta_softplus=True, backend='cpu')
    assert not y.requires_grad
    assert torch.equal(y, out.detach())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    inputs = make_inputs(batch=2, dim=4, length=197, n_state=16, dtype=dtype, seed=11)
    out, st, grads = run(inputs, 'cpu', grad_seed=2)
    assert out.dtype == dtype and st.dtype == dtype
    # Ground truth: float64 on the *rounded* inputs; the kernel accumulates in float32, so the only
    # extra error is the final rounding of the output to the half type.
    ref, ref_st, ref_grads = reference64(inputs, grad_seed=2)
    eps = torch.finfo(dtype).eps
    assert ((out.double() - ref).abs() <= 2 * eps * ref.abs() + 1e-5).all()
    assert ((st.double() - ref_st).abs() <= 2 * eps * ref_st.abs() + 1e-5).all()
    for name in NAMES:
        assert grads[name].dtype == dtype
        assert_grad_close(grads[name], ref_grads[name], f'grad {name}', rtol=4 * eps)


def test_non_contiguous_inputs():
    inputs = make_inputs(batch=2, dim=6, length=50, n_state=8, groups=2, seed=5)
    # Same values, every tensor a strided view of a bigger or transposed buffer.
    u, delta, A, B, C, D, z, bias = inputs
    views = [u.transpose(1, 2).contiguous().transpose(1, 2),
             torch.stack([delta, delta], -1)[..., 0],
             A.t().contiguous().t(),
             B.transpose(-1, -2).contiguous().transpose(-1, -2),
             torch.stack([C, C], -1)[..., 1],
             torch.stack([D, D], -1)[:, 1],
             z.transpose(0, 2).contiguous().transpose(0, 2),
             torch.stack([bias, bias], -1)[:, 0]]
    assert not any(v.is_contiguous() for v in views if v.dim() > 1)
    out, st, grads = run(views, 'cpu', grad_seed=4)
    out_c, st_c, grads_c = run(inputs, 'cpu', grad_seed=4)
    assert torch.equal(out, out_c) and torch.equal(st, st_c)
    for name in NAMES:
        assert torch.equal(grads[name], grads_c[name]), name


def test_long_sequence_strong_decay():
    # L = 8192 with strong decays (large |A|, large delta) and a near-pure accumulator channel.
    inputs = make_inputs(batch=1, dim=4, length=8192, n_state=16, seed=8, delta_scale=3.0,
                         a_max=60.0)
    inputs[2][0] = -1e-4  # channel 0: decay ~1, accumulates over the whole sequence
    out, st, grads = run(inputs, 'cpu', grad_seed=5)
    ref, ref_st, ref_grads = reference64(inputs, grad_seed=5)
    # Decaying channels: the fp32 tolerance of the spec.
    assert_close_fp32(out[:, 1:], ref[:, 1:], 'out (decaying channels)')
    assert_close_fp32(st, ref_st, 'last_state')
    # Accumulator channel: |y| grows to ~1e3 and y_t = <C_t, h_t> cancels, so any fp32 recurrence
    # (the fp32 reference loop included: ~2e-6 of max|y| here) has an error relative to the scale of y,
    # not to y_t itself. Measured ~1.2e-6 * max|y|.
    err0 = (out[:, 0].double() - ref[:, 0]).abs().max()
    assert torch.isfinite(out).all() and err0 <= 1e-5 * ref[:, 0].abs().max(), err0
    for name in NAMES:
        assert_grad_close(grads[name], ref_grads[name], f'grad {name}', rtol=1e-3)


def test_extreme_values_stay_finite():
    # softplus input up to +-200, delta * A down to -1e4: every exp argument must stay <= 0.
    inputs = make_inputs(batch=1, dim=3, length=40, n_state=4, seed=9, delta_scale=100.0,
                         a_max=100.0)
    out, st, grads = run(inputs, 'cpu', grad_seed=6)
    ref, ref_st, ref_grads = reference64(inputs, grad_seed=6)
    assert_close_fp32(out, ref, 'out')
    for name in NAMES:
        assert torch.isfinite(grads[name]).all(), name
        assert_grad_close(grads[name], ref_grads[name], f'grad {name}', rtol=1e-3)


def _variants():
    """The forced-AVX2 path (where the CPU has it), the native (best) path, and the portable one."""
    isas = _ext().available_isas()
    return [i for i in ('avx2', isas[-1], 'default') if i in isas][:3]


@pytest.fixture
def isa_variant(request):
    ext = _ext()
    previous = ext.set_isa(request.param)
    try:
        yield request.param
    finally:
        ext.set_isa(previous)


@pytest.mark.parametrize('isa_variant', sorted(set(_variants())), indirect=True)
@pytest.mark.parametrize('n_state,groups,length,options', [
    (1, None, 203, {}),
    (16, None, 131, {}),
    (5, 3, 77, {}),                       # N not a multiple of any vector width, grouped B/C
    (16, 2, 65, dict(with_z=False)),      # one step past a chunk, no gate
    (16, None, 33, dict(with_d=False, with_bias=False)),
    (40, None, 19, {}),                   # several state vectors, the last one partial
    (40, None, 900, {}),                  # many chunks, several state vectors
    (16, 2, 2100, {}),                    # long sequence, grouped B/C
])
def test_isa_variant_matches_reference(isa_variant, n_state, groups, length, options):
    assert _ext().isa() == isa_variant
    inputs = make_inputs(batch=2, dim=6, length=length, n_state=n_state, groups=groups,
                         seed=n_state + length, **options)
    out, st, grads = run(inputs, 'cpu', grad_seed=3)
    ref, ref_st, ref_grads = reference64(inputs, grad_seed=3)
    assert_close_fp32(out, ref, f'out [{isa_variant}]')
    assert_close_fp32(st, ref_st, f'last_state [{isa_variant}]')
    for name in NAMES:
        if ref_grads.get(name) is not None:
            assert_grad_close(grads[name], ref_grads[name], f'grad {name} [{isa_variant}]')


@pytest.mark.parametrize('isa_variant', sorted(set(_variants())), indirect=True)
def test_isa_variant_float64_gradcheck(isa_variant):
    inputs = make_inputs(batch=1, dim=2, length=67, n_state=5, groups=None, dtype=torch.float64,
                         seed=21)
    xs = [t.clone().requires_grad_() for t in inputs]

    def fn(*args):
        return selective_scan(*args, delta_softplus=True, return_last_state=True, backend='cpu')

    assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_isa_report_and_selection():
    ext = _ext()
    isas = ext.available_isas()
    # Known names only, portable first, best last; the default choice is the best one.
    assert isas[0] == 'default' and set(isas) <= {'default', 'avx2', 'avx512'}
    if not os.environ.get('MMVSSM_CPU_ISA'):
        assert ext.isa() == isas[-1]
    previous = ext.set_isa('default')
    try:
        assert ext.isa() == 'default'
        assert ext.set_isa('auto') == 'default' and ext.isa() == isas[-1]
    finally:
        ext.set_isa(previous)
    with pytest.raises(RuntimeError, match="'no-such-isa'.*not supported.*available: default"):
        ext.set_isa('no-such-isa')
    rate = ext.exp_throughput(0.02)
    assert 1e6 < rate < 1e12  # exps per thread-second: positive, finite, physically plausible


@pytest.mark.parametrize('requested', ['avx2', 'no-such-isa'])
def test_isa_environment_variable(requested):
    """MMVSSM_CPU_ISA forces the variant in a fresh process; an unsupported one is an error."""
    if requested == 'avx2' and 'avx2' not in _ext().available_isas():
        pytest.skip('this CPU has no AVX2')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ('import torch; from mmvssm.ops import cpu_backend, selective_scan\n'
            'e = cpu_backend.extension(); u = torch.ones(1, 2, 3); A = -torch.ones(2, 4)\n'
            'B = torch.ones(1, 4, 3); selective_scan(u, u, A, B, B, backend="cpu"); print(e.isa())')
    env = dict(os.environ, MMVSSM_CPU_ISA=requested,
               PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    if requested == 'avx2':
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == 'avx2'
    else:
        assert proc.returncode != 0
        assert "ISA variant 'no-such-isa' (from MMVSSM_CPU_ISA" in proc.stderr


@pytest.mark.parametrize('isa_variant', sorted(set(_variants())), indirect=True)
def test_thread_count_independence(isa_variant):
    inputs = make_inputs(batch=1, dim=8, length=1100, n_state=16, groups=2, seed=13)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(run(inputs, 'cpu', grad_seed=8))
    finally:
        torch.set_num_threads(previous)
    (o1, s1, g1), (o2, s2, g2) = results
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    for name in NAMES:
        assert torch.equal(g1[name], g2[name]), f'grad {name} depends on the thread count'


def test_backward_workspace_reuse_is_stateless():
    # The dB/dC block accumulators are kept per calling thread between backward calls (grown, never
    # shrunk); a call after larger, smaller and float64 calls must give bit-identical gradients.
    inputs = make_inputs(batch=1, dim=8, length=150, n_state=16, groups=2, seed=21)
    first = run(inputs, 'cpu', grad_seed=3)
    run(make_inputs(batch=2, dim=8, length=400, n_state=16, seed=22), 'cpu', grad_seed=4)
    run(make_inputs(batch=1, dim=4, length=20, n_state=5, dtype=torch.float64, seed=23), 'cpu',
        grad_seed=5)
    run(make_inputs(batch=1, dim=2, length=9, n_state=3, seed=24), 'cpu', grad_seed=6)
    again = run(inputs, 'cpu', grad_seed=3)
    for name in NAMES:
        assert torch.equal(first[2][name], again[2][name]), f'grad {name} changed on reuse'


def test_empty_and_degenerate_shapes():
    inputs = make_inputs(batch=2, dim=4, length=0, n_state=3)
    xs = [t.clone().requires_grad_() for t in inputs]
    out, st = selective_scan(*xs, delta_softplus=True, return_last_state=True, backend='cpu')
    assert out.shape == (2, 4, 0) and torch.equal(st, torch.zeros(2, 4, 3))
    (out.sum() + st.sum()).backward()
    assert xs[2].grad.abs().sum() == 0


def test_kernel_rejects_bad_layout():
    ext = _ext()
    u = torch.randn(1, 2, 5)
    A = -torch.rand(2, 3)
    B = torch.randn(1, 1, 5, 3)
    with pytest.raises(RuntimeError, match='contiguous'):
        ext.fwd(u.transpose(1, 2).contiguous().transpose(1, 2), u, A, B, B, None, None, None,
                False, False)
    with pytest.raises(RuntimeError, match='dtype'):
        ext.fwd(u, u.double(), A, B, B, None, None, None, False, False)
    with pytest.raises(RuntimeError, match='shape'):
        ext.fwd(u, u, A, B[..., :2], B, None, None, None, False, False)


def test_benchmark_reports_variant_and_exp_bound():
    """benchmark_scan's cpu worker records the variant it ran and the exp rate; the table and the
    machine line carry them."""
    bench = load_tool('analysis_tools/benchmark_scan')
    ext = _ext()
    case = dict(name='tiny', batch=1, dim=4, length=33, n_state=16, groups=1)
    spec = dict(case=case, backend='cpu', device='cpu', warmup=0, repeats=1, threads=1,
                skip_backward=True)
    row = bench.run_worker(spec)
    assert row['isa'] == ext.isa() and row['threads'] == 1
    assert 1e6 < row['exp_rate'] < 1e12 and row['fwd_ms'] > 0
    rate, share = bench._exp_bound(row)
    exps = 4 * 33 * 16
    assert float(rate) == pytest.approx(exps / (row['fwd_ms'] / 1e3) / 1e9, abs=0.006)
    table = bench.format_table([row])
    assert '| cpu ' in table and f' {row["isa"]} ' in table and share in table
    line = bench.machine_line(torch.device('cpu'), [1], ['auto'], [row], '0.0')
    assert line.startswith('machine: ') and f'variant(s) run: {row["isa"]}' in line
    assert 'torch threads: 1' in line
    # Thread scaling column: the same backend/variant/case at 1 thread over this row's wall time.
    two = dict(row, threads=2, fwd_ms=row['fwd_ms'] / 1.8)
    assert '| 1.8× ' in bench.format_table([row, two]).splitlines()[-1]
