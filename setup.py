"""mmvssm: vision SSM backbones (Vim, EfficientVMamba, EfficientViM) for OpenMMLab.

The fused CPU selective-scan kernel (``mmvssm.ops._selective_scan_cpu``) is built here with torch's C++
extension machinery, like mmcv's ops. Set ``MMVSSM_WITH_CPU_KERNEL=0`` to skip it (the pure-PyTorch
``chunked`` backend is used then).
"""
import os
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(HERE, 'mmvssm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name: str) -> list:
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip() and not line.startswith('-')]


def extensions():
    csrc = osp.join('mmvssm', 'ops', 'csrc')
    src = osp.join(csrc, 'selective_scan_cpu.cpp')
    if os.environ.get('MMVSSM_WITH_CPU_KERNEL', '1') == '0' or not osp.exists(osp.join(HERE, src)):
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension
    # No -std flag: torch's BuildExtension adds the standard its headers need (C++20 for torch >= 2.10,
    # C++17 before). No -march flag: the kernel is compiled once per ISA (default, AVX2, AVX-512: one
    # translation unit each, with its own `#pragma GCC target`) and the dispatcher picks the best at
    # run time, so the extension runs on any x86-64 CPU. The dispatcher comes first in the link so
    # that any inline function shared with a variant resolves to its baseline copy.
    # -fopenmp: torch's OpenMP parallel_for. -Wno-psabi: the AVX variants return vectors by value;
    # -Wno-unknown-pragmas: ATen's vector headers carry clang-only `#pragma unroll`.
    ext = CppExtension(
        name='mmvssm.ops._selective_scan_cpu',
        sources=[src] + [osp.join(csrc, f'selective_scan_cpu_{isa}.cpp')
                         for isa in ('default', 'avx2', 'avx512')],
        depends=[osp.join(csrc, 'selective_scan_cpu.h'),
                 osp.join(csrc, 'selective_scan_cpu_kernel.h')],
        extra_compile_args=['-O3', '-fopenmp', '-ffp-contract=fast', '-Wno-psabi',
                            '-Wno-unknown-pragmas'],
        extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': BuildExtension}


ext_modules, cmdclass = extensions()

setup(
    name='mmvssm',
    version=read_version(),
    description='Vision state space model backbones (Vim, EfficientVMamba, EfficientViM) for '
                'OpenMMLab detection and segmentation',
    long_description=open(osp.join(HERE, 'README.md')).read() if osp.exists(
        osp.join(HERE, 'README.md')) else '',
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(exclude=('tests', 'configs', 'tools')),
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt'),
                    'cuda': read_requirements('optional.txt')},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
    license='Apache-2.0',
)
