"""The ``triton`` selective-scan backend, run on CPU tensors by Triton's interpreter.

``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports Triton (on machines without a
GPU), so these tests run the real kernels -- forward and backward -- against the float64 reference, through
the public ``selective_scan`` / ``multi_direction_scan``. They skip only where Triton is not installed.
"""
import itertools
import os
import subprocess
import sys
import warnings

import pytest
import torch

from mmvssm.ops import (atrous_scan, bidirectional_conv1d_silu, bidirectional_scan, multi_direction_scan,
                        reads_backward_in_place, selective_scan)
from conftest import REPO
from test_selective_scan import (INPUT_NAMES, assert_close_to_ref, make_inputs, reference64, run,
                                 with_grad)

pytest.importorskip('triton')
triton_backend = pytest.importorskip('mmvssm.ops.triton_backend')
if not triton_backend.interpreting() and not torch.cuda.is_available():
    pytest.skip('Triton kernels need a GPU or TRITON_INTERPRET=1 set before import', allow_module_level=True)

DEVICE = 'cpu' if triton_backend.interpreting() else 'cuda'
# Tolerances (specs/scan.md §4): fp32 forward 1e-5 + 1e-4 |ref|, gradients 1e-4 of the largest; bf16 inputs
# are compared against the float64 scan of the same bf16 values, so only the bf16 rounding of the outputs
# (and float32 accumulation) separates them.
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4, grad=1e-4),
       torch.bfloat16: dict(atol=1e-2, rtol=1e-2, grad=1e-2)}


def to_device(inputs):
    return {k: None if v is None else v.to(DEVICE) for k, v in inputs.items()}


def check_values_and_grads(inputs, dtype, **kwargs):
    """Forward, last state and every input gradient of the triton backend vs the float64 reference."""
    tol = TOL[dtype]
    subject = with_grad(to_device(inputs))
    y, last = run(subject, 'triton', return_last_state=True, **kwargs)
    assert y.dtype == dtype and last.dtype == dtype and y.device.type == DEVICE
    ref = with_grad({k: None if v is None else v.double() for k, v in inputs.items()})
    y_ref, last_ref = run(ref, 'reference', return_last_state=True, **kwargs)
    assert_close_to_ref(y.cpu(), y_ref.detach(), tol['atol'], tol['rtol'])
    assert_close_to_ref(last.cpu(), last_ref.detach(), tol['atol'], tol['rtol'])
    # Random cotangents for both outputs, so the last state's gradient path is exercised too.
    gen = torch.Generator().manual_seed(1)
    w_y = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    w_last = torch.randn(last_ref.shape, generator=gen, dtype=torch.float64)
    ((y_ref * w_y).sum() + (last_ref * w_last).sum()).backward()
    ((y.double() * w_y.to(DEVICE)).sum() + (last.double() * w_last.to(DEVICE)).sum()).backward()
    for name in INPUT_NAMES:
        if inputs[name] is None:
            continue
        grad, grad_ref = subject[name].grad, ref[name].grad
        assert grad is not None and grad.dtype == inputs[name].dtype, name
        scale = grad_ref.abs().max().item()
        err = (grad.cpu().double() - grad_ref).abs().max().item()
        assert err <= tol['grad'] * max(scale, 1e-6), f'{name}: max error {err:.3g}, scale {scale:.3g}'


@pytest.mark.parametrize('length', [1, 7, 150])  # 150: three 64-step chunks, the state carried across
@pytest.mark.parametrize('groups', [None, 2])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_values_and_grads(length, groups, dtype):
    check_values_and_grads(make_inputs(length=length, groups=groups, dim=12, dtype=dtype), dtype,
                           delta_softplus=True)


@pytest.mark.parametrize('use_d,use_z,use_bias,softplus', [
    opts for opts in itertools.product([False, True], repeat=4) if sum(opts) in (0, 1, 3)])
def test_every_option(use_d, use_z, use_bias, softplus):
    inputs = make_inputs(length=19, use_d=use_d, use_z=use_z, use_bias=use_bias,
                         delta_scale=1.0 if softplus else 0.0)
    if not softplus:  # delta must be a positive step when it is not passed through softplus
        inputs['delta'] = torch.rand(inputs['u'].shape, generator=torch.Generator().manual_seed(3))
    check_values_and_grads(inputs, torch.float32, delta_softplus=softplus)


def test_state_not_power_of_two_and_strong_decay():
    """N = 3 (padded to 4 in the kernel) and decays down to exp(-60): nothing overflows or NaNs."""
    check_values_and_grads(make_inputs(length=70, n_state=3, a_min=-30.0, delta_scale=3.0),
                           torch.float32, delta_softplus=True)


def test_extreme_steps_long_sequence():
    """delta x20 (softplus of -60..60: steps from 1e-26 to 60, decays underflowing to 0) over five chunks,
    and an accumulator (every decay ~1) whose error must not grow with L."""
    check_values_and_grads(make_inputs(batch=1, dim=4, length=300, use_z=False, delta_scale=20.0,
                                       a_min=-100.0), torch.float32, delta_softplus=True)
    inputs = make_inputs(batch=1, dim=4, length=600, use_bias=False)
    inputs['delta'] = torch.full_like(inputs['delta'], 1e-4)
    inputs['A'] = inputs['A'] * 1e-2
    assert_close_to_ref(run(to_device(inputs), 'triton').cpu(), reference64(inputs))


def test_decays_above_one_do_not_poison_a_zero_state():
    """Without softplus a negative step makes decays > 1 (legal input); their product may overflow in the
    chunk scan, but must not turn the zero initial state into NaN."""
    inputs = make_inputs(length=37, use_d=False)
    inputs['delta'] = torch.nn.functional.softplus(inputs['delta'])  # + a random-sign delta_bias
    y, last = run(to_device(inputs), 'triton', return_last_state=True)
    y_ref, last_ref = reference64(inputs, return_last_state=True)
    assert_close_to_ref(y.cpu(), y_ref)
    assert_close_to_ref(last.cpu(), last_ref)


def test_non_contiguous_and_mixed_dtype_inputs():
    """Inputs read in place through their strides: B/C as transposed projections, u a slice, fp32 delta
    beside bf16 u."""
    inputs = make_inputs(length=40, groups=2, dim=8)
    batch, groups, n_state, length = inputs['B'].shape
    for name in ('B', 'C'):  # (b, L, G, N) memory, viewed as (b, G, N, L)
        inputs[name] = inputs[name].permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
        assert not inputs[name].is_contiguous()
    inputs['u'] = torch.cat([inputs['u'], inputs['u']], dim=-1)[..., ::2]
    assert not inputs['u'].is_contiguous()
    check_values_and_grads(inputs, torch.float32, delta_softplus=True)
    mixed = dict(inputs, u=inputs['u'].to(torch.bfloat16), z=inputs['z'].to(torch.bfloat16))
    y = run(to_device(mixed), 'triton', delta_softplus=True)
    assert y.dtype == torch.bfloat16
    assert_close_to_ref(y.cpu(), reference64(mixed, delta_softplus=True), 1e-2, 1e-2)


def test_no_grad_path_and_last_state_only_gradient():
    inputs = to_device(make_inputs(length=20))
    with torch.no_grad():
        y = run(inputs, 'triton', delta_softplus=True)
    assert_close_to_ref(y.cpu(), reference64(inputs, delta_softplus=True))
    # Only the last state reaches the loss: the output's gradient is None inside the backward.
    subject = with_grad(inputs)
    _, last = run(subject, 'triton', return_last_state=True, delta_softplus=True)
    last.sum().backward()
    ref = with_grad({k: None if v is None else v.double() for k, v in inputs.items()})
    run(ref, 'reference', return_last_state=True, delta_softplus=True)[1].sum().backward()
    for name in ('u', 'delta', 'A', 'B'):
        torch.testing.assert_close(subject[name].grad.double(), ref[name].grad, atol=1e-5, rtol=1e-4)


def test_multi_direction_scan():
    """K = 4 directions folded into groups, as EfficientVMamba calls it."""
    gen = torch.Generator().manual_seed(0)
    batch, k, dim, length, n_state = 2, 4, 6, 21, 4
    u, delta, z = (torch.randn(batch, k, dim, length, generator=gen) for _ in range(3))
    A = -torch.rand(k, dim, n_state, generator=gen) - 0.1
    B, C = (torch.randn(batch, k, n_state, length, generator=gen) for _ in range(2))
    D, bias = torch.randn(k, dim, generator=gen), torch.randn(k, dim, generator=gen)
    args = (u, delta, A, B, C, D, z, bias)
    y = multi_direction_scan(*(t.to(DEVICE) for t in args), delta_softplus=True, backend='triton')
    y_ref = multi_direction_scan(*(t.double() for t in args), delta_softplus=True, backend='reference')
    assert_close_to_ref(y.cpu(), y_ref)


def test_float64_is_refused_with_the_fix():
    inputs = to_device(make_inputs(dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"'triton' was requested.*float64.*backend=\"chunked\""):
        run(inputs, 'triton')


def test_auto_never_picks_the_interpreter_on_cpu():
    """The interpreter is for tests: auto on CPU tensors stays with cpu -> chunked."""
    from mmvssm.ops import auto_backend
    assert auto_backend('cpu') in ('cpu', 'chunked')
    with torch.no_grad():
        selective_scan(*(make_inputs()[k] for k in INPUT_NAMES))  # runs, and not in the interpreter


# --------------------------------------------------------------------------------------------------
# Fused Vim paths: the backward direction read in the stored order, both outputs summed in the kernel
# --------------------------------------------------------------------------------------------------
def bidirectional_inputs(batch=2, dim=6, length=37, n_state=4, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    return dict(u=randn(batch, 2, dim, length), delta=randn(batch, 2, dim, length) - 1.0,
                A=-(0.1 + 3 * torch.rand(2, dim, n_state, generator=gen, dtype=torch.float64)),
                B=randn(batch, 2, n_state, length), C=randn(batch, 2, n_state, length),
                D=randn(2, dim), z=randn(batch, dim, length), delta_bias=0.5 * randn(2, dim))


def grads_of(fn, inputs, weight):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out = fn(**leaves)
    (out.double() * weight).sum().backward()
    return out, {k: v.grad for k, v in leaves.items()}


def in_scan_order(t):
    """Direction 1 reversed: the layout the unfused backends take (reads_backward_in_place is False)."""
    return torch.stack([t[:, 0], t[:, 1].flip(-1)], dim=1)


@pytest.mark.parametrize('length', [1, 37, 150])  # odd, and several chunks in both directions
def test_bidirectional_scan_fused_equals_unfused(length):
    """The fused kernel (direction 1 scanned backwards in place) vs flip + scan + flip on the reference."""
    inputs = bidirectional_inputs(length=length)
    per_position = ('u', 'delta', 'B', 'C')
    weight = torch.randn(2, 6, length, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def unfused(**kw):
        kw.update({k: in_scan_order(kw[k]) for k in per_position})
        return bidirectional_scan(**kw, delta_softplus=True, backend='reference')

    y_ref, g_ref = grads_of(unfused, inputs, weight)
    y, g = grads_of(lambda **kw: bidirectional_scan(**kw, delta_softplus=True, backend='triton'),
                    {k: v.float().to(DEVICE) for k, v in inputs.items()}, weight.to(DEVICE))
    assert_close_to_ref(y.cpu(), y_ref.detach())
    for name in inputs:
        scale = g_ref[name].abs().max().item()
        err = (g[name].cpu().double() - g_ref[name]).abs().max().item()
        assert err <= 1e-4 * scale, f'{name}: max error {err:.3g}, scale {scale:.3g}'


@pytest.mark.parametrize('halves', [False, True])
def test_both_forward_layouts(monkeypatch, halves):
    """The forward's two tile layouts the autotuner chooses between (the state as one N-wide tile, or as
    two halves of N): values and every gradient, over several chunks, plain with groups and bidirectional."""
    monkeypatch.setitem(triton_backend.DEFAULT_TILE, 'HALVES', halves)
    check_values_and_grads(make_inputs(length=150, groups=2), torch.float32, delta_softplus=True)
    test_bidirectional_scan_fused_equals_unfused(150)


def test_bidirectional_conv_fused_equals_official_flip():
    """Direction 1 = silu(causal_conv(flip(u), w1)) as the official layer computes it: in scan order from the
    PyTorch path, in the stored order (flipped back) from the fused kernel."""
    gen = torch.Generator().manual_seed(0)
    batch, dim, length, k = 2, 20, 70, 4
    u = torch.randn(batch, 2 * dim, length, generator=gen)[:, ::2]  # strided, as a slice of in_proj
    w0, w1 = torch.randn(dim, 1, k, generator=gen), torch.randn(dim, 1, k, generator=gen)
    b0, b1 = torch.randn(dim, generator=gen), torch.randn(dim, generator=gen)
    conv, silu = torch.nn.functional.conv1d, torch.nn.functional.silu
    official = torch.stack([silu(conv(u, w0, b0, padding=k - 1, groups=dim)[..., :length]),
                            silu(conv(u.flip(-1), w1, b1, padding=k - 1, groups=dim)[..., :length])], 1)
    dy = torch.randn(batch, 2, dim, length, generator=gen)
    results = {}
    for backend, stored_order in (('chunked', False), ('triton', True)):
        leaves = [t.clone().to(DEVICE).requires_grad_() for t in (u, w0, b0, w1, b1)]
        assert reads_backward_in_place(backend, leaves[0]) == stored_order
        y = bidirectional_conv1d_silu(*leaves, backend=backend).cpu()
        if stored_order:
            y = in_scan_order(y)
        torch.testing.assert_close(y, official, atol=1e-5, rtol=1e-5)
        (y * dy).sum().backward()
        results[backend] = [t.grad.cpu() for t in leaves]
    for grad, grad_ref in zip(results['triton'], results['chunked']):
        torch.testing.assert_close(grad, grad_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('with_cls_token,img_size', [(False, (48, 48)), (True, (48, 48)),
                                                     (True, (144, 128))])
def test_vim_layer_fused_equals_unfused(with_cls_token, img_size):
    """A whole Vim backbone on the fused Triton path vs the reference backend (flips, stacks, torch conv):
    outputs and every parameter gradient. L = 9 (odd), 10 with the class token in the middle, and 73
    (two chunks)."""
    from mmvssm.models.backbones.vim import Vim
    torch.manual_seed(0)
    model = Vim(arch=dict(embed_dims=8, depth=2, d_state=4), img_size=img_size, with_cls_token=with_cls_token,
                out_type='raw', out_indices=(0, 1), multi_scale=False, scan_backend='reference')
    x = torch.randn(2, 3, *img_size)
    outs, grads = {}, {}
    for backend in ('reference', 'triton'):
        for layer in model.layers:
            layer.mixer.scan_backend = backend
        model.zero_grad()
        model.to(DEVICE if backend == 'triton' else 'cpu')
        out = model(x.to(next(model.parameters()).device))
        sum(o.square().sum() for o in out).backward()
        outs[backend] = [o.detach().cpu() for o in out]
        grads[backend] = {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}
        model.cpu()
    for o, r in zip(outs['triton'], outs['reference']):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)
    for name, g_ref in grads['reference'].items():
        torch.testing.assert_close(grads['triton'][name], g_ref, atol=1e-4 * g_ref.abs().max().item() + 1e-7,
                                   rtol=1e-3, msg=name)


def _compile_tool(subprocess_env, *args):
    import triton
    ptxas = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    if not os.path.exists(ptxas):
        pytest.skip('this Triton has no CUDA backend with ptxas')
    env = {k: v for k, v in subprocess_env.items() if k != 'TRITON_INTERPRET'}
    tool = os.path.join(REPO, 'tools', 'analysis_tools', 'triton_resources.py')
    result = subprocess.run([sys.executable, tool, '--arch', '90', *args], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [[cell.strip() for cell in line.split('|')[1:-1]] for line in result.stdout.splitlines()
            if line.startswith('| ') and '_kernel' in line]


def test_kernels_compile_for_sm90(subprocess_env):
    """The interpreter runs kernels as Python; this compiles every launch of the three fused layouts
    (training: forward + backward, inference: forward) to a cubin for sm_90 with the JIT's run-time
    specialisation (Triton's compiler and the ptxas it ships: no GPU needed), which catches what only the
    compiler rejects, and checks the layout the kernels were built for: no spills, no fenced atomics, and
    the forward's chunk loop free of per-step shuffles (only the sum over N crosses lanes: 1/8 shuffle per
    state element at N = 16). In a subprocess: under TRITON_INTERPRET=1 kernels are not compilable."""
    rows = _compile_tool(subprocess_env, '--state', '16', '1', '--shape', '2', '40', '70')
    assert len(rows) == 2 * 9, rows
    for workload, kernel, mode, tile, registers, spills, *_, membars in rows:
        assert int(registers) > 0 and spills == 'no' and membars == '0', (workload, kernel, mode)
    fwd_n16 = [row for row in rows if row[1] == 'selective_scan_fwd_kernel' and row[3].split(', ')[2] == '16']
    assert fwd_n16 and all(float(row[9]) <= 0.15 for row in fwd_n16), fwd_n16


def test_resource_tool_compiles_a_models_launches(subprocess_env):
    """``--model``: the launches of Vim-Ti's inference and training, conv and scan kernels alike."""
    rows = _compile_tool(subprocess_env, '--model', 'vim-ti', '--size', '32', '--batch', '1')
    kernels = {(row[0].split()[-1], row[1]) for row in rows}
    assert {('inference', 'conv_fwd_kernel'), ('inference', 'selective_scan_fwd_kernel'),
            ('training', 'selective_scan_bwd_kernel'), ('training', 'conv_bwd_input_kernel')} <= kernels, rows


def test_reversed_direction_equals_flipped_forward_scan():
    """Direction 1 of the fused kernel (reversed addressing, every scan a forward scan) equals the forward
    kernel run on the flipped sequence, values and every gradient, over several chunks: the property a
    compiled ``associative_scan(reverse=True)`` has broken upstream (triton-lang/triton#4362)."""
    inputs = bidirectional_inputs(length=150)
    inputs['u'][:, 0] = 0.0  # direction 0 contributes nothing: its u and D are zero
    inputs['D'][0] = 0.0
    weight = torch.randn(2, 6, 150, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    inputs = {k: v.float() for k, v in inputs.items()}

    def forward_on_flipped(u, delta, A, B, C, D, z, delta_bias):
        y = selective_scan(u[:, 1].flip(-1), delta[:, 1].flip(-1), A[1], B[:, 1].flip(-1), C[:, 1].flip(-1),
                           D[1], z.flip(-1), delta_bias[1], delta_softplus=True, backend='triton')
        return y.flip(-1)

    y_ref, g_ref = grads_of(forward_on_flipped, {k: v.to(DEVICE) for k, v in inputs.items()}, weight.to(DEVICE))
    y, g = grads_of(lambda **kw: bidirectional_scan(**kw, delta_softplus=True, backend='triton'),
                    {k: v.to(DEVICE) for k, v in inputs.items()}, weight.to(DEVICE))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for name in inputs:  # direction 0's parameters get zero gradients in both (its u and D are zero)
        got, want = (g[name][:, 1], g_ref[name][:, 1]) if name == 'u' else (g[name], g_ref[name])
        scale = want.abs().max().item() + 1e-12
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale, msg=name)


# --------------------------------------------------------------------------------------------------
# Fused EfficientVMamba path: four skip-sampled directions, outputs written at their map positions
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('hw', [(5, 7), (6, 4), (20, 30)])  # odd sizes (padded), even, 150 tokens a direction
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_atrous_scan_fused_equals_gather_scan_scatter(hw, dtype):
    """The kernel's in-place map writes vs multi_direction_scan + atrous_scatter on the reference: values
    (float32 out for bf16 in, as the official .float() call) and every gradient."""
    from mmvssm.ops.atrous import atrous_gather
    gen = torch.Generator().manual_seed(0)
    batch, dim, n_state = 2, 6, 4
    x = torch.randn(batch, dim, *hw, generator=gen, dtype=torch.float64)
    xs = atrous_gather(x)
    length = xs.shape[-1]
    inputs = dict(xs=xs, delta=torch.randn(batch, 4, dim, length, generator=gen, dtype=torch.float64) - 1,
                  A=-(0.1 + 3 * torch.rand(4, dim, n_state, generator=gen, dtype=torch.float64)),
                  B=torch.randn(batch, 4, n_state, length, generator=gen, dtype=torch.float64),
                  C=torch.randn(batch, 4, n_state, length, generator=gen, dtype=torch.float64),
                  D=torch.randn(4, dim, generator=gen, dtype=torch.float64),
                  delta_bias=0.5 * torch.randn(4, dim, generator=gen, dtype=torch.float64))
    rounded = {k: v.to(dtype) if k in ('xs', 'delta', 'B', 'C') else v.float() for k, v in inputs.items()}
    weight = torch.randn(batch, *hw, dim, generator=gen, dtype=torch.float64)
    y_ref, g_ref = grads_of(lambda **kw: atrous_scan(**kw, delta_softplus=True, height=hw[0], width=hw[1],
                                                     backend='reference'),
                            {k: v.double() for k, v in rounded.items()}, weight)
    y, g = grads_of(lambda **kw: atrous_scan(**kw, delta_softplus=True, height=hw[0], width=hw[1],
                                             backend='triton'),
                    {k: v.to(DEVICE) for k, v in rounded.items()}, weight.to(DEVICE))
    assert y.shape == (batch, *hw, dim) and y.dtype == torch.float32
    assert_close_to_ref(y.cpu(), y_ref.detach())
    for name in inputs:
        assert g[name].dtype == rounded[name].dtype, name
        scale = g_ref[name].abs().max().item()
        err = (g[name].cpu().double() - g_ref[name]).abs().max().item()
        assert err <= TOL[dtype]['grad'] * scale, f'{name}: max error {err:.3g}, scale {scale:.3g}'


def test_efficient_vmamba_fused_equals_unfused():
    """A small EfficientVMamba on the fused Triton path vs the reference backend: outputs and every
    parameter gradient (odd feature maps: 25x33 input)."""
    from mmvssm.models.backbones.efficient_vmamba import EfficientVMamba
    torch.manual_seed(0)
    model = EfficientVMamba(arch=dict(dims=8, depths=[1, 1, 1, 1]), drop_path_rate=0.0, scan_backend='reference')
    x = torch.randn(2, 3, 25, 33)
    outs, grads = {}, {}
    for backend in ('reference', 'triton'):
        for module in model.modules():
            if hasattr(module, 'scan_backend'):
                module.scan_backend = backend
        model.zero_grad()
        out = model(x)
        sum(o.square().sum() for o in out).backward()
        outs[backend] = [o.detach() for o in out]
        grads[backend] = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                          if p.grad is not None}
    for o, r in zip(outs['triton'], outs['reference']):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)
    assert grads['triton'].keys() == grads['reference'].keys()
    for name, g_ref in grads['reference'].items():
        torch.testing.assert_close(grads['triton'][name], g_ref, atol=1e-4 * g_ref.abs().max().item() + 1e-7,
                                   rtol=1e-3, msg=name)


def test_triton_that_cannot_build_kernels_is_unavailable_loudly(monkeypatch):
    """On a GPU, a Triton that imports but cannot compile (no C compiler, old driver) is reported once and
    auto skips it, instead of failing inside the model's forward."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)  # as on a GPU machine
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)

    def no_compiler():
        raise RuntimeError('Failed to find C compiler. Please specify via CC environment variable.')

    monkeypatch.setattr(triton_backend, '_smoke_test', no_compiler)
    triton_backend.cuda_failure.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match='Triton is installed but its kernels do not run.*C compiler'):
            assert not triton_backend.is_available(torch.device('cuda'))
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert not triton_backend.is_available(torch.device('cuda'))  # cached: warned once
        assert 'C compiler' in triton_backend.cuda_failure()
    finally:
        triton_backend.cuda_failure.cache_clear()


def test_fused_ops_under_torch_compile():
    """torch.compile(fullgraph=True) captures the fused Triton paths as the mmvssm ops (conv, bidirectional
    and atrous scans): values and gradients equal the eager fused kernels'."""
    from mmvssm.ops.atrous import atrous_gather
    inputs = {k: v.float().to(DEVICE) for k, v in bidirectional_inputs(dim=4, length=9).items()}
    w = torch.randn(4, 1, 4, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    x = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(4)).to(DEVICE)

    def vim(u, delta, A, B, C, D, z, delta_bias):
        conv = bidirectional_conv1d_silu(x, w, None, w, None, backend='triton')
        return bidirectional_scan(conv * u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                  backend='triton')

    a = {k: v.float().to(DEVICE) for k, v in make_inputs(batch=1, dim=4, length=6, n_state=4).items()}
    xs = atrous_gather(torch.randn(1, 4, 5, 3, generator=torch.Generator().manual_seed(5)).to(DEVICE))
    atrous_inputs = dict(xs=xs, delta=xs.roll(1, -1), A=-torch.rand(4, 4, 4).to(DEVICE),
                         B=torch.randn(1, 4, 4, 6).to(DEVICE), C=torch.randn(1, 4, 4, 6).to(DEVICE),
                         D=a['D'].repeat(4).view(4, 4), delta_bias=a['delta_bias'].repeat(4).view(4, 4))

    def atrous(xs, delta, A, B, C, D, delta_bias):
        return atrous_scan(xs, delta, A, B, C, D, delta_bias, delta_softplus=True, height=5, width=3,
                           backend='triton')

    graphs = []

    def recording(gm, example_inputs):  # runs the captured graph as it is; keeps it to look at
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    for fn, kw, ops in ((vim, inputs, ('bidirectional_conv1d_silu', 'bidirectional_scan')),
                        (atrous, atrous_inputs, ('atrous_scan', ))):
        compiled = torch.compile(fn, fullgraph=True, backend=recording)
        y, g = grads_of(compiled, kw, 1.0)
        assert all(f'mmvssm.{op}' in graphs[-1] for op in ops), graphs[-1]
        y_ref, g_ref = grads_of(fn, kw, 1.0)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        for name in kw:
            torch.testing.assert_close(g[name], g_ref[name], atol=1e-4, rtol=1e-4, msg=name)
