"""How tools/install.sh builds mmcv's ops on this machine (CPU or CUDA), and whether an installed mmcv fits.

mmcv's setup.py compiles CUDA ops when a GPU is visible or ``FORCE_CUDA=1``; the wheel that comes out only
suits machines like the one that built it. So the kind of build is decided here, once, and the wheel cache
is keyed on it: a CPU-only wheel is never reused where CUDA ops are wanted, nor a wheel built for other GPU
architectures. Needs only torch (it runs before mmcv is installed)::

    python tools/misc/mmcv_build.py plan       # shell assignments for install.sh (eval), or an error
    python tools/misc/mmcv_build.py check KIND VERSION   # exit 0 if mmcv VERSION with KIND ops is there,
                                                         # else print what is wrong and exit 1

The kind: ``FORCE_CUDA=1`` -> cuda, ``FORCE_CUDA=0`` -> cpu, unset -> cuda when torch sees a GPU.
A CUDA build needs nvcc (``CUDA_HOME``), the GPU architectures (``TORCH_CUDA_ARCH_LIST``, else those of the
visible GPUs), and cublas headers; a toolkit without them gets ``CPATH`` pointed at the headers that torch's
CUDA wheels ship (``site-packages/nvidia/*/include``).
"""
import argparse
import glob
import os
import os.path as osp
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

ARCH_EXAMPLES = '9.0 for H100/H200, 8.0 for A100, 8.6 for RTX 30xx, 8.9 for L4/RTX 40xx'


class PlanError(Exception):
    """This machine cannot build the requested kind of ops; the message says how to fix it."""


@dataclass
class Machine:
    """What the decision depends on (gathered by :func:`probe`, or written by hand in tests)."""
    torch_tag: str                      # e.g. torch2.14.1+cu130-cp311
    torch_cuda: Optional[str]           # torch.version.cuda, None for a CPU build of torch
    gpu_archs: List[str]                # compute capabilities of the visible GPUs, e.g. ['9.0']
    cuda_homes: List[str]               # candidate CUDA toolkits, in order of preference
    header_dirs: List[str] = field(default_factory=list)  # include dirs of torch's nvidia wheels


@dataclass
class Plan:
    kind: str                           # 'cpu' or 'cuda'
    cache_key: str                      # folder name under the wheel cache
    build_env: Dict[str, str]           # environment of the mmcv build
    reason: str                         # one line for the install log

    def shell(self) -> str:
        """Bash assignments; MMCV_BUILD_ENV is an array of NAME=VALUE for ``env``."""
        env = ' '.join(shlex.quote(f'{k}={v}') for k, v in self.build_env.items())
        return '\n'.join([f'MMCV_OPS={self.kind}', f'MMCV_CACHE_KEY={shlex.quote(self.cache_key)}',
                          f'MMCV_BUILD_ENV=({env})', f'MMCV_PLAN={shlex.quote(self.reason)}'])


def plan(env: Mapping[str, str], machine: Machine) -> Plan:
    """The mmcv build for ``machine`` under the environment ``env`` (FORCE_CUDA, TORCH_CUDA_ARCH_LIST, ...)."""
    force = env.get('FORCE_CUDA', '')
    if force not in ('', '0', '1'):
        raise PlanError(f'FORCE_CUDA={force!r}: use FORCE_CUDA=1 (CUDA ops) or FORCE_CUDA=0 (CPU ops only), '
                        f'or leave it unset (CUDA ops when a GPU is visible)')
    if force == '0' or (force == '' and not machine.gpu_archs):
        why = 'FORCE_CUDA=0' if force == '0' else 'no GPU visible'
        # CUDA_VISIBLE_DEVICES='': mmcv's setup.py would otherwise build CUDA ops whenever it sees a GPU
        return Plan('cpu', f'{machine.torch_tag}-cpu', {'FORCE_CUDA': '0', 'CUDA_VISIBLE_DEVICES': ''},
                    f'CPU ops ({why}; FORCE_CUDA=1 builds CUDA ops)')
    why = 'FORCE_CUDA=1' if force == '1' else f'GPU visible (sm {",".join(machine.gpu_archs)})'
    if machine.torch_cuda is None:
        raise PlanError(f'CUDA ops requested ({why}) but {machine.torch_tag} is a CPU build of torch; '
                        f'install a CUDA build of torch, or set FORCE_CUDA=0 for CPU ops')
    home = next((h for h in machine.cuda_homes if osp.isfile(osp.join(h, 'bin', 'nvcc'))
                 and osp.isfile(osp.join(h, 'include', 'cuda_runtime.h'))), None)
    if home is None:
        raise PlanError(f'CUDA ops requested ({why}) but no CUDA toolkit (bin/nvcc and '
                        f'include/cuda_runtime.h) in {", ".join(machine.cuda_homes) or "CUDA_HOME or PATH"}; '
                        f'install the CUDA {machine.torch_cuda} toolkit (torch was built with it) and set '
                        f'CUDA_HOME to it, or set FORCE_CUDA=0 for CPU ops')
    archs = env.get('TORCH_CUDA_ARCH_LIST') or ';'.join(sorted(set(machine.gpu_archs)))
    if not archs:
        raise PlanError(f'FORCE_CUDA=1 without a visible GPU: say which GPUs to build for with '
                        f'TORCH_CUDA_ARCH_LIST ({ARCH_EXAMPLES})')
    build_env = {'FORCE_CUDA': '1', 'CUDA_HOME': home, 'TORCH_CUDA_ARCH_LIST': archs}
    notes = []
    if not osp.isfile(osp.join(home, 'include', 'cublas_v2.h')):
        headers = next((d for d in machine.header_dirs if osp.isfile(osp.join(d, 'cublas_v2.h'))), None)
        if headers is None:
            raise PlanError(f'the CUDA toolkit in {home} has no cublas headers (include/cublas_v2.h), and '
                            f'torch\'s nvidia wheels provide none either; install the CUDA '
                            f'{machine.torch_cuda} cublas development headers, or set FORCE_CUDA=0 for CPU ops')
        build_env['CPATH'] = os.pathsep.join(p for p in (headers, env.get('CPATH', '')) if p)
        notes.append(f'cublas headers from {headers}')
    arch_key = re.sub(r'[^0-9A-Za-z.+]+', '_', archs.strip())
    cuda_key = 'cu' + machine.torch_cuda.replace('.', '')
    notes = f'; {", ".join(notes)}' if notes else ''
    return Plan('cuda', f'{machine.torch_tag}-{cuda_key}-sm{arch_key}', build_env,
                f'CUDA ops for sm {archs} with {home}/bin/nvcc ({why}{notes})')


def probe(env: Mapping[str, str]) -> Machine:
    """This machine, as seen by the torch in this interpreter."""
    import torch
    tag = f'torch{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}'
    archs = []
    if torch.cuda.is_available():
        archs = ['{}.{}'.format(*torch.cuda.get_device_capability(i))
                 for i in range(torch.cuda.device_count())]
    homes = [env[k] for k in ('CUDA_HOME', 'CUDA_PATH') if env.get(k)]
    if not homes:  # as torch.utils.cpp_extension looks: nvcc on PATH, then the usual place
        nvcc = shutil.which('nvcc', path=env.get('PATH'))
        homes = ([osp.dirname(osp.dirname(nvcc))] if nvcc else []) + ['/usr/local/cuda']
    site = osp.dirname(osp.dirname(torch.__file__))
    headers = sorted(glob.glob(osp.join(site, 'nvidia', '*', 'include')))
    return Machine(tag, torch.version.cuda, archs, homes, headers)


def check_installed(kind: str, version: str) -> Optional[str]:
    """None if mmcv ``version`` is installed with ops (CUDA ops for ``kind='cuda'``), else what is wrong."""
    try:
        import mmcv
        import mmcv.ops  # the compiled ops must import against this torch
    except Exception as err:  # a wheel built for another torch fails with OSError/ImportError/...
        return f'mmcv.ops does not import ({type(err).__name__}: {err})'
    if mmcv.__version__ != version:
        return f'mmcv {mmcv.__version__} is installed, {version} is wanted'
    if kind == 'cuda' and mmcv.ops.get_compiling_cuda_version() == 'not available':
        return 'the installed mmcv was built without CUDA ops'
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('plan', help='print the build as shell assignments')
    check = sub.add_parser('check', help='exit 0 if the installed mmcv fits')
    check.add_argument('kind', choices=['cpu', 'cuda'])
    check.add_argument('version')
    args = parser.parse_args(argv)
    if args.command == 'plan':
        try:
            print(plan(os.environ, probe(os.environ)).shell())
        except PlanError as err:
            print(f'[install] error: {err}', file=sys.stderr)
            return 2
        return 0
    problem = check_installed(args.kind, args.version)
    if problem:
        print(problem)
    return 1 if problem else 0


if __name__ == '__main__':
    sys.exit(main())
