"""The one route weights take, reached through torch's and mmengine's extension points only.

* ``import mmvssm`` replaces no function of mmengine or torch (compared with a process that did not
  import it);
* every scheme of mmengine's ``CheckpointLoader`` (local, http, torchvision/modelzoo, open-mmlab/openmmlab,
  mmcls) reads weights-only with the allow-list: a pickle that runs code is refused through each of them
  (served from a local HTTP server on 127.0.0.1, or found in torch's hub cache), and the per-file opt-in
  names a URL's cached file;
* ``tools/test.py`` refuses non-finite tensors, unused tensors under the model's own module names and a
  checkpoint of ours whose tensors changed since it was written, naming the file and the tensors.
"""
import contextlib
import functools
import http.server
import json
import os.path as osp
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint, get_mmcls_models, get_torchvision_models

from conftest import REPO, TINY_CONFIGS

from mmvssm.checkpoint import (ENV_ALLOW_UNSAFE, AtomicCheckpointHook, UnsafeCheckpointError, atomic_save,
                               load_checkpoint_file)

SEG_CONFIG = osp.join(TINY_CONFIGS, 'upernet_vim_tiny_tiny-ade.py')

# ---------------------------------------------------------------- no function replaced
# A digest of every function and class attribute of the modules through which weights move: the code
# object (file and line) of each function, so a wrapper made to look like the original (functools.wraps)
# still differs.
DIGEST = textwrap.dedent('''
    import importlib, inspect, json, sys
    MODULES = ['torch', 'torch.serialization', 'torch.hub', 'torch.nn.modules.module', 'torch.utils.model_zoo',
               'mmengine.runner', 'mmengine.runner.checkpoint', 'mmengine.runner.runner', 'mmengine.hooks',
               'mmengine.hooks.checkpoint_hook', 'mmengine.fileio', 'mmengine.fileio.backends',
               'mmengine.fileio.backends.local_backend', 'mmengine.model', 'mmengine.utils.dl_utils']
    def code_of(value):
        value = getattr(value, '__func__', value)
        code = getattr(value, '__code__', None)
        if code is not None:
            return f'{code.co_filename}:{code.co_firstlineno}'
        return f'{getattr(value, "__module__", None)}.{getattr(value, "__qualname__", type(value).__name__)}'
    def digest():
        out = {}
        for name in MODULES:
            module = importlib.import_module(name)
            for attr, value in sorted(vars(module).items()):
                if inspect.ismodule(value) or not callable(value):
                    continue
                out[f'{name}.{attr}'] = code_of(value)
                if inspect.isclass(value) and value.__module__.startswith(('torch', 'mmengine')):
                    for key, member in sorted(vars(value).items()):
                        if callable(getattr(member, '__func__', member)):
                            out[f'{name}.{attr}.{key}'] = code_of(member)
        return out
    # torch wraps some of its own functions when torch._dynamo is first imported (torch.manual_seed):
    # both processes import it, so that only mmvssm's doing can differ
    import torch._dynamo  # noqa: F401
    if sys.argv[1] == 'mmvssm':
        import mmvssm  # noqa: F401
    print(json.dumps(digest()))
''')


def _digest(subprocess_env, *args: str) -> dict:
    out = subprocess.run([sys.executable, '-c', DIGEST, *args], env=subprocess_env, cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_mmvssm_replaces_no_function_of_mmengine_or_torch(subprocess_env):
    without, with_mmvssm = _digest(subprocess_env, 'plain'), _digest(subprocess_env, 'mmvssm')
    assert len(without) > 1000
    changed = {k: (v, with_mmvssm.get(k)) for k, v in without.items() if with_mmvssm.get(k) != v}
    assert not changed, changed


def test_the_digest_sees_a_disguised_wrapper():
    """The comparison above can fail: a functools.wraps wrapper differs from the function it wraps."""
    namespace = {}
    exec(DIGEST.split("if sys.argv[1]")[0], namespace)
    import mmengine.runner.checkpoint as mm_checkpoint
    before = namespace['digest']()
    original = mm_checkpoint.load_state_dict
    mm_checkpoint.load_state_dict = functools.wraps(original)(lambda *a, **k: original(*a, **k))
    try:
        after = namespace['digest']()
    finally:
        mm_checkpoint.load_state_dict = original
    assert after['mmengine.runner.checkpoint.load_state_dict'] != before['mmengine.runner.checkpoint.load_state_dict']


# ---------------------------------------------------------------- every scheme refuses code
class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')  # creates the marker file if the unpickler calls it


class Harmless:
    """A class outside the allow-list that runs nothing: loadable only with the opt-in."""

    value = 3


@contextlib.contextmanager
def local_http_server(directory: str):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the block; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _evil(path: str, marker: str) -> str:
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': RunsCode(marker)}, path)
    return path


def test_every_scheme_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    marker = str(tmp_path / 'code_ran')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    monkeypatch.delenv(ENV_ALLOW_UNSAFE, raising=False)
    cache = osp.join(torch.hub.get_dir(), 'checkpoints')
    serve = tmp_path / 'served'
    serve.mkdir()
    _evil(str(serve / 'evil.pth'), marker)
    with local_http_server(str(serve)) as base:
        (tmp_path / 'mmengine_home').mkdir()
        (tmp_path / 'mmengine_home' / 'open_mmlab.json').write_text(json.dumps(
            {'evil_url': f'{base}/evil.pth', 'evil_file': 'evil_local.pth'}))
        _evil(str(tmp_path / 'mmengine_home' / 'evil_local.pth'), marker)
        # released names resolve to URLs whose file is already in the hub cache (no network)
        tv_url, cls_url = get_torchvision_models()['resnet18'], get_mmcls_models()['resnet18']
        for url in (tv_url, cls_url):
            import os
            os.makedirs(cache, exist_ok=True)
            _evil(osp.join(cache, osp.basename(url)), marker)
        sources = [_evil(str(tmp_path / 'evil_local_file.pth'), marker), f'{base}/evil.pth',
                   'torchvision://resnet18', 'modelzoo://resnet18', 'open-mmlab://evil_url',
                   'openmmlab://evil_url', 'open-mmlab://evil_file', 'mmcls://resnet18']
        for source in sources:
            with pytest.raises(UnsafeCheckpointError, match=ENV_ALLOW_UNSAFE):
                _load_checkpoint(source, map_location='cpu')
            with pytest.raises(UnsafeCheckpointError):
                load_checkpoint(torch.nn.Linear(1, 1), source, map_location='cpu')
            assert not osp.exists(marker), source
    assert osp.isfile(osp.join(cache, 'evil.pth'))  # the URL was read through its cached file


def test_url_opt_in_names_the_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    serve = tmp_path / 'served'
    serve.mkdir()
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': {'obj': Harmless()}}, str(serve / 'trusted.pth'))
    with local_http_server(str(serve)) as base:
        monkeypatch.delenv(ENV_ALLOW_UNSAFE, raising=False)
        with pytest.raises(UnsafeCheckpointError, match='trusted.pth'):
            _load_checkpoint(f'{base}/trusted.pth')
        cached = osp.join(torch.hub.get_dir(), 'checkpoints', 'trusted.pth')
        monkeypatch.setenv(ENV_ALLOW_UNSAFE, cached)
        assert _load_checkpoint(f'{base}/trusted.pth')['meta']['obj'].value == 3


# ---------------------------------------------------------------- tools/test.py refuses wrong weights
def _seg_state(**cfg_options) -> dict:
    from mmengine.config import Config

    from dense_helpers import build_model
    cfg = Config.fromfile(SEG_CONFIG)
    cfg.merge_from_dict(cfg_options)
    return build_model(cfg.model, cfg.default_scope, init_weights=False).state_dict()


def _refusal(tools, config: str, checkpoint: str, work_dir: str) -> str:
    with pytest.raises(SystemExit) as info:
        tools['test'].main([config, checkpoint, '--work-dir', work_dir])
    assert info.value.code not in (0, None)
    return str(info.value)


def test_tools_test_refuses_nan_deeper_and_changed_checkpoints(in_workspace, tools, tmp_path):
    own = _seg_state()
    nan = {k: v.clone() for k, v in own.items()}
    nan['backbone.patch_embed.proj.weight'][0, 0, 0, 0] = float('nan')
    path = str(tmp_path / 'nan.pth')
    torch.save({'state_dict': nan}, path)
    message = _refusal(tools, SEG_CONFIG, path, str(tmp_path / 'w1'))
    assert 'nan.pth' in message and 'NaN or Inf' in message and 'backbone.patch_embed.proj.weight' in message
    # a deeper model of the same family: every expected tensor present, layers 6 and 7 unused
    deeper = _seg_state(**{'model.backbone.arch.depth': 8})
    assert set(own) < set(deeper)
    path = str(tmp_path / 'depth8.pth')
    torch.save({'state_dict': deeper}, path)
    message = _refusal(tools, SEG_CONFIG, path, str(tmp_path / 'w2'))
    assert 'depth8.pth' in message and 'backbone.layers.6.' in message and "module names" in message
    # a checkpoint our hook wrote, whose tensor data changed afterwards (flipped bits)
    checkpoint = {'meta': {}, 'state_dict': {k: v.clone() for k, v in own.items()}}
    AtomicCheckpointHook().before_save_checkpoint(None, checkpoint)
    weight = checkpoint['state_dict']['decode_head.conv_seg.weight']
    weight.view(-1).view(torch.int32)[0] ^= 1 << 3
    path = str(tmp_path / 'iter_4.pth')
    atomic_save(checkpoint, path)
    message = _refusal(tools, SEG_CONFIG, path, str(tmp_path / 'w3'))
    assert 'iter_4.pth' in message and 'checksums' in message and 'decode_head.conv_seg.weight' in message
    # the same file, intact, is evaluated
    checkpoint = load_checkpoint_file(path)
    weight = checkpoint['state_dict']['decode_head.conv_seg.weight']
    weight.view(-1).view(torch.int32)[0] ^= 1 << 3
    atomic_save(checkpoint, path)
    assert 'mIoU' in tools['test'].main([SEG_CONFIG, path, '--work-dir', str(tmp_path / 'w4')])
