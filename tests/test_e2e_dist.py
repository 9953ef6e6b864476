"""Two-process (gloo, CPU) DDP training through tools/dist_train.sh, the launchers' choice of device, and
the launcher scripts' usage and arguments."""
import glob
import os
import os.path as osp
import socket
import stat
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TOOLS
from test_e2e_seg import CONFIG, FAST, schedule

from mmvssm.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_two_processes(tiny_workspace, subprocess_env, tmp_path):
    work_dir = str(tmp_path / 'work')
    env = dict(subprocess_env, PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'dist_train.sh'), CONFIG, '2', '--work-dir', work_dir,
         '--cfg-options', *FAST, *schedule(4, 4)],
        cwd=tiny_workspace, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log_file, = glob.glob(osp.join(work_dir, '*', '*.log'))
    with open(log_file) as f:
        log = f.read()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    if torch.cuda.device_count() < 2:  # no GPU, or fewer than processes: on the CPU with gloo, said aloud
        assert 'run on the CPU with the gloo backend' in proc.stdout + proc.stderr
        assert "'backend': 'gloo'" in log
    assert 'Iter(train) [4/4]' in log and 'mIoU' in log
    ckpt = load_checkpoint_file(osp.join(work_dir, 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    # the model was wrapped by MMDistributedDataParallel but the checkpoint holds plain keys
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])


@pytest.mark.parametrize('script, nargs', [('dist_train.sh', 2), ('dist_test.sh', 3),
                                           ('slurm_train.sh', 3)])
def test_launcher_scripts_print_usage(script, nargs):
    proc = subprocess.run(['bash', osp.join(TOOLS, script)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert 'CONFIG' in proc.stderr


# ----------------------------------------------------------------- too few GPUs for the processes
@pytest.mark.parametrize('gpus, procs, short', [(0, 2, False), (1, 1, False), (2, 2, False), (4, 2, False),
                                                (1, 2, True), (2, 8, True)])
def test_gpu_shortage(monkeypatch, gpus, procs, short):
    from mmvssm.engine.launch import gpu_shortage
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    reason = gpu_shortage(procs)
    assert (reason is not None) == short
    if short:
        assert f'{procs} processes per node but {gpus} GPU' in reason and f'start at most {gpus}' in reason


def test_direct_launch_with_too_few_gpus_names_the_fix(monkeypatch):
    """torchrun started by hand on a one-GPU machine: refused before mmengine fails in set_device/NCCL."""
    from mmengine.config import Config

    from mmvssm.engine.launch import ToolInputError, adapt_to_device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    with pytest.raises(ToolInputError, match=r'2 processes per node but 1 GPU.*CUDA_VISIBLE_DEVICES='):
        adapt_to_device(Config(dict(model=dict(type='X'))), 'pytorch')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    adapt_to_device(Config(dict(model=dict(type='X'))), 'pytorch')  # one process per GPU: fine


def fake_command(folder, name: str, script: str) -> None:
    path = folder / name
    path.write_text('#!/usr/bin/env bash\n' + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


# Stands in for `python -m torch.distributed.run` (prints what it was given); any other call runs the real
# python with torch seeing $FAKE_GPUS GPUs.
FAKE_PYTHON = """
if [ "$1" = -m ]; then echo "torchrun CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} $*"; exit 0; fi
exec "$REAL_PYTHON" -c 'import os, sys, torch
torch.cuda.device_count = lambda: int(os.environ["FAKE_GPUS"])
sys.argv = sys.argv[1:]
exec(sys.stdin.read())' "$@"
"""


def test_dist_launch_hides_gpus_it_cannot_use(tmp_path, subprocess_env):
    """With fewer GPUs than processes the launcher starts torchrun with the GPUs hidden, and says why."""
    fake_command(tmp_path, 'python', FAKE_PYTHON)
    env = dict(subprocess_env, PATH=f'{tmp_path}{os.pathsep}{subprocess_env["PATH"]}', REAL_PYTHON=sys.executable)
    env.pop('CUDA_VISIBLE_DEVICES', None)
    for gpus, hidden in ((1, True), (2, False), (0, False)):
        proc = subprocess.run(['bash', osp.join(TOOLS, 'dist_train.sh'), 'CFG', '2', '--amp'],
                              env=dict(env, FAKE_GPUS=str(gpus)), capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert ('CUDA_VISIBLE_DEVICES= ' in proc.stdout) == hidden, proc.stdout
        assert ('2 processes per node but 1 GPU visible' in proc.stderr) == hidden, proc.stderr
        assert '--nproc_per_node=2' in proc.stdout and 'train.py --launcher pytorch CFG --amp' in proc.stdout


# ----------------------------------------------------------------- slurm_train.sh's arguments
@pytest.mark.parametrize('args, expected, resume', [
    (['CFG'], 'CFG --launcher slurm', None),
    (['CFG', '--resume'], 'CFG --launcher slurm --resume', 'auto'),
    (['CFG', '--resume', 'w/iter_4.pth'], 'CFG --launcher slurm --resume w/iter_4.pth', 'w/iter_4.pth'),
    (['CFG', 'w', '--resume'], 'CFG --launcher slurm --work-dir w --resume', 'auto'),
    (['CFG', 'w', '--resume', '--amp'], 'CFG --launcher slurm --work-dir w --resume --amp', 'auto'),
])
def test_slurm_train_passes_options_to_train_py(tmp_path, tools, args, expected, resume):
    fake_command(tmp_path, 'srun', 'echo "srun $*"')
    env = dict(os.environ, PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}', GPUS='2')
    proc = subprocess.run(['bash', osp.join(TOOLS, 'slurm_train.sh'), 'part', 'job', *args],
                          env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(f'train.py {expected}'), proc.stdout
    assert '--ntasks=2' in proc.stdout
    # and tools/train.py reads them as meant
    parsed = tools['train'].parse_args(expected.split())
    assert parsed.resume == resume and parsed.launcher == 'slurm'
    assert parsed.work_dir == ('w' if 'w' in args else None)
