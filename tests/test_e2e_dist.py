"""Two-process (gloo, CPU) DDP training through tools/dist_train.sh, and the launcher scripts' usage and
arguments."""
import glob
import os
import os.path as osp
import socket
import stat
import subprocess

import pytest

from conftest import REPO, TOOLS
from test_e2e_seg import CONFIG, FAST, schedule

from mmvssm.utils import load_checkpoint_file

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


def fake_command(folder, name: str, script: str) -> None:
    path = folder / name
    path.write_text('#!/usr/bin/env bash\n' + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


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
