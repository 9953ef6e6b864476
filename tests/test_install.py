"""tools/install.sh's choice of mmcv build (CPU or CUDA ops) and wheel cache key, without building anything."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import TOOLS, load_tool

mmcv_build = load_tool('misc/mmcv_build')
TAG = 'torch2.14.1+cu130-cp311'


def toolkit(root, cublas: bool = True) -> str:
    """A fake CUDA toolkit folder: bin/nvcc, include/cuda_runtime.h and, optionally, cublas_v2.h."""
    for rel in ['bin/nvcc', 'include/cuda_runtime.h'] + (['include/cublas_v2.h'] if cublas else []):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('')
    return str(root)


def machine(gpus=(), homes=(), headers=(), torch_cuda='13.0'):
    return mmcv_build.Machine(TAG, torch_cuda, list(gpus), list(homes), list(headers))


def test_cpu_ops_without_a_gpu_or_when_asked():
    for env, gpus in (({}, ()), ({'FORCE_CUDA': '0'}, ('9.0',))):
        plan = mmcv_build.plan(env, machine(gpus))
        assert plan.kind == 'cpu' and plan.cache_key == f'{TAG}-cpu'
        # mmcv's setup.py builds CUDA ops whenever it sees a GPU: hidden for a CPU build
        assert plan.build_env == {'FORCE_CUDA': '0', 'CUDA_VISIBLE_DEVICES': ''}


def test_cuda_ops_with_a_gpu_or_when_forced(tmp_path):
    home = toolkit(tmp_path / 'cuda')
    plan = mmcv_build.plan({}, machine(gpus=('9.0', '9.0'), homes=['/nowhere', home]))
    assert plan.kind == 'cuda' and plan.cache_key == f'{TAG}-cu130-sm9.0'  # never the CPU wheel's key
    assert plan.build_env == {'FORCE_CUDA': '1', 'CUDA_HOME': home, 'TORCH_CUDA_ARCH_LIST': '9.0'}
    forced = mmcv_build.plan({'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '8.0;9.0+PTX'}, machine(homes=[home]))
    assert forced.kind == 'cuda' and forced.cache_key == f'{TAG}-cu130-sm8.0_9.0+PTX'
    assert forced.build_env['TORCH_CUDA_ARCH_LIST'] == '8.0;9.0+PTX'


def test_cublas_headers_from_torchs_wheels(tmp_path):
    home = toolkit(tmp_path / 'cuda', cublas=False)
    wheels = toolkit(tmp_path / 'nvidia' / 'cu13')
    plan = mmcv_build.plan({'CPATH': '/x'}, machine(gpus=['9.0'], homes=[home],
                                                    headers=[str(tmp_path / 'none'), osp.join(wheels, 'include')]))
    assert plan.build_env['CPATH'] == os.pathsep.join([osp.join(wheels, 'include'), '/x'])
    assert 'cublas headers from' in plan.reason
    with pytest.raises(mmcv_build.PlanError, match='no cublas headers'):
        mmcv_build.plan({}, machine(gpus=['9.0'], homes=[home]))


@pytest.mark.parametrize('env, kwargs, message', [
    ({'FORCE_CUDA': 'yes'}, {}, 'use FORCE_CUDA=1'),
    ({'FORCE_CUDA': '1'}, {'torch_cuda': None}, 'CPU build of torch'),
    ({'FORCE_CUDA': '1', 'TORCH_CUDA_ARCH_LIST': '9.0'}, {'homes': ['/nowhere']}, 'no CUDA toolkit.*CUDA_HOME'),
    ({}, {'gpus': ['9.0'], 'homes': []}, 'install the CUDA 13.0 toolkit'),
])
def test_cuda_build_that_cannot_work_names_the_fix(env, kwargs, message):
    with pytest.raises(mmcv_build.PlanError, match=message):
        mmcv_build.plan(env, machine(**kwargs))


def test_forced_cuda_without_a_gpu_needs_the_architectures(tmp_path):
    with pytest.raises(mmcv_build.PlanError, match='TORCH_CUDA_ARCH_LIST.*9.0 for H100'):
        mmcv_build.plan({'FORCE_CUDA': '1'}, machine(homes=[toolkit(tmp_path)]))


def run_tool(*args, **env):
    return subprocess.run([sys.executable, osp.join(TOOLS, 'misc', 'mmcv_build.py'), *args],
                          capture_output=True, text=True, env=dict(os.environ, **env), timeout=300)


def test_plan_as_install_sh_reads_it(tmp_path):
    """The real probe of this machine, and the shell assignments install.sh evals."""
    out = run_tool('plan', FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0', CUDA_HOME=toolkit(tmp_path))
    assert out.returncode == 0, out.stderr
    script = out.stdout + '\nprintf "%s|%s|%s\\n" "$MMCV_OPS" "$MMCV_CACHE_KEY" "${MMCV_BUILD_ENV[*]}"'
    shown = subprocess.run(['bash', '-c', script], capture_output=True, text=True).stdout.strip()
    kind, key, build_env = shown.split('|')
    assert kind == 'cuda' and key.endswith('-sm9.0') and key.startswith('torch')
    assert f'CUDA_HOME={tmp_path}' in build_env and 'TORCH_CUDA_ARCH_LIST=9.0' in build_env
    bad = run_tool('plan', FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0', CUDA_HOME='/nowhere')
    assert bad.returncode == 2 and '[install] error: CUDA ops requested' in bad.stderr


def test_installed_mmcv_is_checked_for_the_kind_of_ops():
    pytest.importorskip('mmcv.ops')
    from mmcv.ops import get_compiling_cuda_version
    has_cuda = get_compiling_cuda_version() != 'not available'
    assert run_tool('check', 'cpu', '2.1.0').returncode == 0
    cuda = run_tool('check', 'cuda', '2.1.0')
    assert (cuda.returncode == 0) == has_cuda
    if not has_cuda:  # this machine's CPU-only mmcv is not accepted where CUDA ops are wanted
        assert 'built without CUDA ops' in cuda.stdout
    assert 'is wanted' in run_tool('check', 'cpu', '9.9.9').stdout


def test_install_script_parses():
    for script in ('install.sh', 'dist_launch.sh', 'slurm_train.sh'):
        assert subprocess.run(['bash', '-n', osp.join(TOOLS, script)]).returncode == 0, script
