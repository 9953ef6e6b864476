"""Shared fixtures: one generated tiny dataset per session and the tools loaded as modules.

The tools run in-process (``main(argv)``): importing torch, mmseg and mmdet costs ~5-20 s per Python
process on a busy 2-core machine, more than the tiny trainings themselves. Only the distributed test
starts processes (torchrun).
"""
import importlib.util
import os
import os.path as osp
import sys
from types import ModuleType
from typing import Dict

import pytest
import torch

# Triton's interpreter runs the `triton` scan backend's kernels on CPU tensors, so CI tests them. Triton
# reads the variable when a kernel is defined: it must be set before mmvssm imports them.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
TINY_CONFIGS = osp.join(REPO, 'configs', 'tiny')
# Small enough for seconds per run, big enough for mmdet (images under 32 px are dropped).
TINY_SAMPLE = dict(num_train=8, num_val=4, size=64)
# --cfg-options for trainings whose result tools/test.py evaluates: no validation pass at the end.
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    path = osp.join(TOOLS, f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'mmvssm_tool_{name.replace("/", "_")}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def tiny_workspace(tmp_path_factory) -> str:
    """A folder holding ``data/tiny/{ade,coco}`` (the layout the tiny configs expect), generated once."""
    make = load_tool('misc/make_tiny_datasets')
    root = str(tmp_path_factory.mktemp('workspace'))
    make.generate(osp.join(root, 'data', 'tiny'), **TINY_SAMPLE)
    return root


@pytest.fixture
def in_workspace(tiny_workspace, monkeypatch) -> str:
    """Run the test from the workspace, so the configs' relative ``data/tiny`` paths resolve."""
    monkeypatch.chdir(tiny_workspace)
    monkeypatch.syspath_prepend(REPO)
    return tiny_workspace


@pytest.fixture(scope='session')
def tools() -> Dict[str, ModuleType]:
    return {name: load_tool(name) for name in ('train', 'test')}


@pytest.fixture(scope='session')
def subprocess_env() -> Dict[str, str]:
    """Environment for tool subprocesses: mmvssm importable, one thread per process (2 shared cores)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
    # the launcher scripts run `python`: make it this interpreter (the venv's), whatever PATH says
    env['PATH'] = os.pathsep.join([os.path.dirname(sys.executable), env.get('PATH', '')])
    env['OMP_NUM_THREADS'] = '1'
    env.setdefault('PYTHONWARNINGS', 'ignore')
    return env


def pytest_configure(config) -> None:
    config.addinivalue_line('markers', 'e2e: end-to-end runs of the tools on the tiny sample')
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
