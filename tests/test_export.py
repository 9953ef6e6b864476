"""The scan ops as torch operators: opcheck, torch.compile(fullgraph=True), and tools/deployment/export.py
(torch.export and ONNX) end to end on the tiny configs of all three backbones.

ONNX cases need ``onnx``, ``onnxscript`` and ``onnxruntime`` and skip, saying so, without them.
"""
import importlib.util
import io
import os.path as osp
import warnings
from typing import Dict, Optional

import pytest
import torch
from torch import Tensor

import mmvssm.ops as ops
from conftest import TINY_CONFIGS, TOOLS
from mmvssm.ops import custom_ops

ONNX_MISSING = [name for name in ('onnx', 'onnxscript', 'onnxruntime') if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(ONNX_MISSING), reason=f'ONNX export needs {", ".join(ONNX_MISSING)} '
                                '(pip install onnx onnxscript onnxruntime)')
CONFIGS = {name: osp.join(TINY_CONFIGS, f'upernet_{name}_tiny-ade.py')
           for name in ('vim_tiny', 'efficient_vmamba_t', 'efficient_vim_m1')}


def scan_inputs(batch: int = 2, dim: int = 4, length: int = 7, n_state: int = 3, k: Optional[int] = None,
                seed: int = 0) -> Dict[str, Tensor]:
    """Inputs of a scan (k=None) or of a k-direction scan, all requiring grad."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).requires_grad_()

    lead = (batch, ) if k is None else (batch, k)
    par = () if k is None else (k, )
    return dict(u=rand(*lead, dim, length), delta=rand(*lead, dim, length),
                A=(-torch.rand(*par, dim, n_state, generator=gen) - 0.1).requires_grad_(),
                B=rand(*lead, n_state, length), C=rand(*lead, n_state, length), D=rand(*par, dim),
                z=rand(batch, dim, length), delta_bias=rand(*par, dim))


class _Scan(torch.nn.Module):
    def forward(self, u, delta, A, B, C):
        return ops.selective_scan(u, delta, A, B, C, delta_softplus=True)


# --------------------------------------------------------------------------------------------------
# The ops
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend, last', [('cpu', True), ('chunked', False)])
def test_opcheck_selective_scan(backend, last):
    if backend not in ops.available_backends('cpu'):
        pytest.skip(f'backend {backend!r} is not available here')
    i = scan_inputs()
    torch.library.opcheck(torch.ops.mmvssm.selective_scan.default,
                          (i['u'], i['delta'], i['A'], i['B'], i['C'], i['D'], i['z'], i['delta_bias'], True,
                           last, backend))


def test_opcheck_fused_ops():
    """The fused ops' semantics (Vim's direction 1 in the stored order) on any backend."""
    i = scan_inputs(k=2)
    torch.library.opcheck(torch.ops.mmvssm.bidirectional_scan.default,
                          (i['u'], i['delta'], i['A'], i['B'], i['C'], i['D'], i['z'], i['delta_bias'], True,
                           'auto'))
    w0, w1, b0 = (torch.randn(4, 1, 4).requires_grad_(), torch.randn(4, 1, 4).requires_grad_(),
                  torch.randn(4).requires_grad_())
    torch.library.opcheck(torch.ops.mmvssm.bidirectional_conv1d_silu.default, (i['z'], w0, b0, w1, None, 'auto'))
    a = scan_inputs(k=4, length=6)
    torch.library.opcheck(torch.ops.mmvssm.atrous_scan.default,
                          (a['u'], a['delta'], a['A'], a['B'], a['C'], None, a['delta_bias'], True, 5, 3, 'auto'))


def test_fused_op_semantics_match_the_unfused_layout():
    """bidirectional_scan's op reads direction 1 in the stored order: it equals the public function fed
    the scan-order layout that the conv produces on the CPU."""
    i = scan_inputs(k=2)
    u, delta, B, C = (t.detach() for t in (i['u'], i['delta'], i['B'], i['C']))
    rest = dict(A=i['A'].detach(), D=i['D'].detach(), z=i['z'].detach(), delta_bias=i['delta_bias'].detach())
    rev = [torch.stack([t[:, 0], t[:, 1].flip(-1)], dim=1) for t in (u, delta, B, C)]
    expected = ops.bidirectional_scan(*rev[:2], rest['A'], *rev[2:], D=rest['D'], z=rest['z'],
                                      delta_bias=rest['delta_bias'], delta_softplus=True)
    got = torch.ops.mmvssm.bidirectional_scan(u, delta, rest['A'], B, C, rest['D'], rest['z'], rest['delta_bias'],
                                              True, 'reference')
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 4, 9)
    w0, w1, b = torch.randn(4, 1, 4), torch.randn(4, 1, 4), torch.randn(4)
    scan_order = ops.bidirectional_conv1d_silu(x, w0, b, w1, b)
    stored = torch.ops.mmvssm.bidirectional_conv1d_silu(x, w0, b, w1, b, 'auto')
    torch.testing.assert_close(stored[:, 1], scan_order[:, 1].flip(-1))
    torch.testing.assert_close(stored[:, 0], scan_order[:, 0])


@pytest.mark.parametrize('last', [False, True])
def test_compile_fullgraph_values_and_grads(last):
    """torch.compile(fullgraph=True) goes through the op (no graph break at the scan) and matches eager,
    gradients included."""
    i = scan_inputs()

    def fn(u, delta, A, B, C, D, z, delta_bias):
        out = ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                 return_last_state=last)
        return out[0].sum() + out[1].square().sum() if last else out.square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend='aot_eager')
    loss = compiled(**i)
    grads = torch.autograd.grad(loss, list(i.values()))
    loss_ref = fn(**i)
    grads_ref = torch.autograd.grad(loss_ref, list(i.values()))
    torch.testing.assert_close(loss, loss_ref)
    for name, g, g_ref in zip(i, grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4, msg=name)


def test_compile_fullgraph_vim_layers():
    """Vim's conv + bidirectional scan and EfficientVMamba's atrous scan compile without a graph break."""
    i = scan_inputs(k=2)
    x = torch.randn(2, 4, 7)
    w = torch.randn(4, 1, 4)

    def vim(u, delta, A, B, C, D, z, delta_bias):
        conv = ops.bidirectional_conv1d_silu(x, w, None, w, None)
        return ops.bidirectional_scan(conv * u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    a = scan_inputs(k=4, length=6)

    def atrous(u, delta, A, B, C, D, z, delta_bias):
        return ops.atrous_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True, height=5, width=3)

    graphs = []

    def recording(gm, example_inputs):  # runs the captured graph as it is; keeps it to look at
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    for fn, inputs in ((vim, i), (atrous, a)):
        got = torch.compile(fn, fullgraph=True, backend=recording)(**inputs)
        torch.testing.assert_close(got, fn(**inputs))
        # On the CPU the fused layouts are composed around the one scan op
        assert graphs[-1].count('torch.ops.mmvssm.selective_scan') == 1, graphs[-1]


@pytest.mark.parametrize('length, groups', [(1, 1), (16, 2), (17, 1), (40, 2)])
def test_segsum_decomposition_matches_reference(length, groups):
    """The ONNX decomposition (blocks of 16 steps, masked before the exponential) against the float64
    recurrence, with strong decays (delta A down to about -60 a step), and its gradients finite."""
    from mmvssm.ops.reference_scan import scan_reference
    from mmvssm.ops.segsum_scan import scan_segsum
    gen = torch.Generator().manual_seed(length)
    u, delta, z = (torch.randn(2, 4, length, generator=gen) for _ in range(3))
    A = -torch.rand(4, 3, generator=gen) * 20
    B, C = (torch.randn(2, groups, 3, length, generator=gen) for _ in range(2))
    D, bias = torch.randn(4, generator=gen), torch.randn(4, generator=gen)
    args = [t.requires_grad_() for t in (u, delta * 2, A, B, C, D, z, bias)]
    y, last = scan_segsum(*args, True, True)
    y_ref, last_ref = scan_reference(*(t.detach().double() for t in args), True, True)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(last.double(), last_ref, atol=2e-5, rtol=1e-4)
    (y.sum() + last.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in args)


def test_captured_graph_holds_the_op_and_resolves_where_it_runs():
    """torch.export keeps the scan opaque with the backend name asked for ('auto' stays 'auto')."""

    i = {k: v.detach() for k, v in scan_inputs().items()}
    args = (i['u'], i['delta'], i['A'], i['B'], i['C'])
    program = torch.export.export(_Scan(), args)
    scans = [n for n in program.graph.nodes if str(n.target) == 'mmvssm.selective_scan.default']
    assert len(scans) == 1 and scans[0].args[-1] == 'auto'
    with ops.use_backend('reference'):
        torch.testing.assert_close(program.module()(*args), _Scan()(*args))
    decomposed = program.run_decompositions(custom_ops.decompositions())
    assert not [n for n in decomposed.graph.nodes if str(n.target).startswith('mmvssm.')]
    torch.testing.assert_close(decomposed.module()(*args), _Scan()(*args), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# tools/deployment/export.py on the tiny configs
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def export_tool():
    spec = importlib.util.spec_from_file_location('export_tool', osp.join(TOOLS, 'deployment', 'export.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def run_tool(tool, tmp_path, capsys, name: str, fmt: str, *extra: str) -> str:
    out = tmp_path / f'{name}.{fmt}'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        rc = tool.main([CONFIGS[name], '--format', fmt, '--shape', '32', '32', '--out', str(out),
                        '--no-onnx-optimize', *extra])
    printed = capsys.readouterr()
    assert rc == 0, printed.out + printed.err
    assert out.is_file()
    return printed.out


FORMATS = ['torch_export', pytest.param('onnx', marks=needs_onnx)]


@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('name', ['efficient_vmamba_t', 'efficient_vim_m1'])
def test_export_tool(export_tool, tmp_path, capsys, name, fmt):
    out = run_tool(export_tool, tmp_path, capsys, name, fmt)
    assert 'max abs diff' in out and 'OK: max relative difference' in out


@pytest.mark.parametrize('fmt', FORMATS)
def test_export_tool_vim(export_tool, tmp_path, capsys, fmt):
    out = run_tool(export_tool, tmp_path, capsys, 'vim_tiny', fmt)
    assert 'OK: max relative difference' in out


def test_export_tool_fails_above_tolerance(export_tool, tmp_path, capsys, monkeypatch):
    """The check is real: an exported program that drifts from eager by more than --tolerance exits 1."""
    exact = export_tool.export_torch
    monkeypatch.setattr(export_tool, 'export_torch',
                        lambda *args: [t + 1e-2 * t.abs().max() for t in exact(*args)])
    rc = export_tool.main([CONFIGS['efficient_vim_m1'], '--format', 'torch_export', '--shape', '32', '32',
                           '--out', str(tmp_path / 'm.pt2'), '--tolerance', '1e-3'])
    captured = capsys.readouterr()
    assert rc == 1
    assert 'max rel diff 1.000e-02' in captured.out
    assert 'FAILED: the exported model differs' in captured.err


@needs_onnx
def test_onnx_without_decomposition_refuses():
    """Handing the opaque op to either ONNX exporter fails naming it: never a silently wrong graph."""
    i = {k: v.detach() for k, v in scan_inputs().items()}
    args = (i['u'], i['delta'], i['A'], i['B'], i['C'])
    with pytest.raises(Exception, match='mmvssm'):
        torch.onnx.export(_Scan(), args, dynamo=True, verbose=False)
    with warnings.catch_warnings(), pytest.raises(Exception, match='mmvssm::selective_scan'):
        warnings.simplefilter('ignore')
        torch.onnx.export(_Scan(), args, io.BytesIO(), dynamo=False)  # the TorchScript-based exporter


@pytest.mark.parametrize('name', ['vim_tiny', 'efficient_vmamba_t', 'efficient_vim_m1'])
def test_compile_fullgraph_backbones(export_tool, name):
    """Each whole backbone compiles into one graph (no break at the scans) and matches eager."""
    model, _ = export_tool.build(CONFIGS[name], None, 'backbone')
    x = torch.randn(1, 3, 32, 32)
    torch._dynamo.reset()
    with torch.no_grad():
        for got, expected in zip(torch.compile(model, fullgraph=True, backend='eager')(x), model(x)):
            torch.testing.assert_close(got, expected)


def test_torchscript_trace_saves_and_reloads(export_tool, tmp_path):
    """torch.jit.trace records the ops (no Python kernels baked in): the saved module reloads and runs."""
    model, _ = export_tool.build(CONFIGS['efficient_vmamba_t'], None, 'backbone')
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x, ), check_trace=False)
    assert 'mmvssm::selective_scan' in str(traced.inlined_graph)
    traced.save(str(tmp_path / 'm.pt'))
    loaded = torch.jit.load(str(tmp_path / 'm.pt'))
    with torch.no_grad():
        for a, b in zip(loaded(x), model(x)):
            torch.testing.assert_close(a, b)
