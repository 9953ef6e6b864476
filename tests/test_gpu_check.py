"""``tools/analysis_tools/gpu_check.py --tiny`` on the CPU: every section runs and reports sane values.

The whole check runs once, in-process (the triton backend under the interpreter that conftest turns on).
"""
import json
import os
from dataclasses import replace

import pytest
import torch

from conftest import load_tool

gpu_check = load_tool('analysis_tools/gpu_check')


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('gpu_check') / 'check.json')
    interpret = os.environ.get('TRITON_INTERPRET')
    try:
        returned = gpu_check.main(['--tiny', '--device', 'cpu', '--out', out])
    finally:  # the tool may turn the interpreter on; leave the session as it was
        if interpret is None:
            os.environ.pop('TRITON_INTERPRET', None)
        else:
            os.environ['TRITON_INTERPRET'] = interpret
    with open(out) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(returned, default=str))
    return written


def _backends(report):
    return [b for b in report['environment']['values']['backends_available'] if b != 'reference']


def test_every_section_labelled_without_errors(report):
    assert report['tiny'] and report['device'] == 'cpu'
    for name in gpu_check.SECTIONS:
        assert 'error' not in report[name], report[name].get('error')
        assert report[name]['machine'] == report['machine']
    assert 'threads' in report['machine']


def test_environment(report):
    env = report['environment']['values']
    assert env['torch'] == torch.__version__ and env['threads'] >= 1
    assert {'reference', 'chunked'} <= set(env['backends_available'])
    assert env['auto_backend'] in env['backends_available']
    if env['triton'] and env['triton_interpret'] == '1':
        assert 'triton' in env['backends_available']


def test_parity_passes_for_every_backend_and_dtype(report):
    rows = report['parity']['rows']
    backends = _backends(report)
    assert 'chunked' in backends
    for backend in backends:
        mine = [r for r in rows if r['backend'] == backend]
        assert {r['dtype'] for r in mine} == {'fp32', 'bf16'}
        assert len(mine) == 2 * len(gpu_check.TINY.parity_cases)
        for r in mine:
            assert 'error' not in r and r['passed'] and r['last_state_grad'], r
            assert set(r['errors']) == {'y', 'last_state', 'du', 'ddelta', 'dA', 'dB', 'dC', 'dD', 'dz',
                                        'ddelta_bias'}
            assert max(r['errors'].values()) < r['tolerance'] == gpu_check.TOLERANCE[r['dtype']]


def test_scan_timings_and_floor(report):
    section = report['scan']
    assert section['bandwidth_gbs'] > 0
    assert {r['backend'] for r in section['rows']} == set(_backends(report))
    for r in section['rows']:
        assert 'error' not in r, r
        assert r['fwd_ms'] > 0 and r['fwd_bwd_ms'] > 0
        assert 0 < r['floor_fwd_ms'] < r['floor_fwd_bwd_ms']


def test_train_steps(report):
    rows = report['train']['rows']
    assert {r['model'] for r in rows} == set(gpu_check.TINY.train_models)
    measured = [r for r in rows if 'note' not in r]
    assert {r['model'] for r in measured} == set(gpu_check.TINY.train_models)
    for r in measured:
        assert 'error' not in r, r
        assert r['ms'] > 0 and (r['peak_mib'] is None or r['peak_mib'] >= 0)
    # the triton interpreter is too slow for whole models: skipped, and said so
    assert all(r['backend'] == 'triton' for r in rows if 'note' in r)


def test_inference_vim_vs_deit(report):
    rows = report['inference']['rows']
    labels = {'Vim-Ti', 'DeiT-Ti (SDPA)', 'DeiT-Ti (explicit attn)'}
    for size in gpu_check.TINY.inference_sizes:
        mine = [r for r in rows if r['size'] == size]
        assert {r['model'] for r in mine} == labels
        assert all('error' not in r and r['ms'] > 0 for r in mine), mine


def test_profile_counts_launches_per_backend(report):
    """The fused Triton path launches fewer kernels than the unfused one (flips, stacks, torch conv)."""
    rows = report['profile']['rows']
    assert {r['backend'] for r in rows} == set(_backends(report))
    for r in rows:
        assert 'error' not in r and r['launches'] > 0 and r['top_ops'], r
    vim = {r['backend']: r['launches'] for r in rows if r['model'] == 'Vim-Ti'}
    if 'triton' in vim:
        assert vim['triton'] < vim['cpu' if 'cpu' in vim else 'chunked']


def test_mini_deit_attention_paths_agree():
    torch.manual_seed(0)
    model = gpu_check.MiniDeiT(32, dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sdpa = model.set_attention(False)(x)
        explicit = model.set_attention(True)(x)
    assert sdpa.shape == (2, 16)
    torch.testing.assert_close(sdpa, explicit, rtol=1e-5, atol=1e-5)


def test_failing_row_is_recorded_not_raised():
    def oom():
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2 GiB')

    row = gpu_check.guarded(dict(model='x'), oom, torch.device('cpu'))
    assert row['error'].startswith('OutOfMemoryError: CUDA out of memory')
    assert 'OutOfMemoryError' in gpu_check.table('t', 'm', [('model', 'model')], [row]).splitlines()[-1]


def test_parity_without_last_state_gradient_where_refused(monkeypatch):
    """As mamba_ssm's kernel: the last state has no gradient; the rest is still checked, and noted."""
    scan = gpu_check._scan_with_grads

    def refusing(backend, inputs, weights, with_state_grad):
        if backend == 'chunked' and with_state_grad:
            raise RuntimeError('cannot backpropagate through the returned last state')
        return scan(backend, inputs, weights, with_state_grad)

    monkeypatch.setattr(gpu_check, '_scan_with_grads', refusing)
    settings = replace(gpu_check.TINY, parity_cases=gpu_check.TINY.parity_cases[:1])
    rows = gpu_check.parity(torch.device('cpu'), settings, ['chunked'])
    assert len(rows) == 2
    for r in rows:
        assert r['passed'] and r['result'] == 'pass' and not r['last_state_grad']
        assert 'last state' in r['note']
