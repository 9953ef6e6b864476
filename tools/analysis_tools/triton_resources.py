"""Compile mmvssm's Triton kernels for a GPU architecture without a GPU, and report registers and spills.

Triton compiles to PTX and ``ptxas`` (shipped in the Triton wheel) assembles it, so the kernels' resource
use can be read on any machine: registers per thread, spill stores/loads and shared memory, for the tile
sizes the backend launches. Spills and very high register counts are what to avoid when tuning; the speed
itself needs a GPU (``gpu_check.py``).

Examples::

    python tools/analysis_tools/triton_resources.py                 # sm_90 (H100/H200), N = 16
    python tools/analysis_tools/triton_resources.py --arch 80 --state 16 64
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def compile_kernel(fn, constexprs: Dict[str, Any], num_warps: int, arch: int = 90,
                   pointer_dtype: str = '*bf16') -> Dict[str, Any]:
    """Compile a ``@triton.jit`` kernel for CUDA ``arch`` (no GPU needed): its PTX, and what ``ptxas``
    reports (registers, spill bytes, shared memory). Pointers to state / gradient buffers are float32."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fp32_buffers = {'last_ptr', 'ckpt_ptr', 'dA_ptr', 'dB_ptr', 'dC_ptr', 'dD_ptr', 'dbias_ptr', 'g_ptr',
                    'dw0_ptr', 'dw1_ptr', 'db0_ptr', 'db1_ptr', 'A_ptr', 'D_ptr', 'bias_ptr', 'dlast_ptr'}
    signature = {name: 'constexpr' if name in constexprs else
                 ('*fp32' if name in fp32_buffers else pointer_dtype) if name.endswith('_ptr') else 'i32'
                 for name in fn.arg_names}
    source = ASTSource(fn=fn, signature=signature,
                       constexprs={(fn.arg_names.index(k), ): v for k, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget('cuda', arch, 32), options=dict(num_warps=num_warps))
    ptxas = osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'ptxas')
    suffix = 'a' if arch >= 90 else ''
    with tempfile.TemporaryDirectory() as tmp:
        ptx = osp.join(tmp, 'kernel.ptx')
        with open(ptx, 'w') as f:
            f.write(compiled.asm['ptx'])
        report = subprocess.run([ptxas, f'-arch=sm_{arch}{suffix}', '-v', ptx, '-o', os.devnull],
                                capture_output=True, text=True, check=True).stderr
    regs = re.search(r'Used (\d+) registers', report)
    spills = re.search(r'(\d+) bytes spill stores, (\d+) bytes spill loads', report)
    return dict(kernel=fn.__name__, num_warps=num_warps, registers=int(regs.group(1)) if regs else None,
                spill_stores=int(spills.group(1)) if spills else 0,
                spill_loads=int(spills.group(2)) if spills else 0, shared=compiled.metadata.shared,
                ptx=compiled.asm['ptx'])


def launched_configs(n_state: int) -> List[Dict[str, Any]]:
    """The kernels with the tile sizes and warps the backends launch for N = ``n_state``."""
    from mmvssm.ops import conv1d, triton_backend
    from mmvssm.ops import triton_conv_kernels as conv_kernels
    from mmvssm.ops import triton_scan_kernels as scan_kernels
    block_d, block_n, block_l = triton_backend.tile_sizes(n_state, 1 << 20)
    flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_D=block_d, BLOCK_N=block_n,
                 BLOCK_L=block_l)
    configs = []
    for layout in (triton_backend.PLAIN, triton_backend.BIDIRECTIONAL, triton_backend.ATROUS):
        modes = dict(BIDIRECTIONAL=layout == triton_backend.BIDIRECTIONAL,
                     ATROUS=layout == triton_backend.ATROUS)
        configs.append((scan_kernels.selective_scan_fwd_kernel, dict(flags, SAVE_CKPT=True, **modes),
                        triton_backend.NUM_WARPS))
        configs.append((scan_kernels.selective_scan_bwd_kernel, dict(flags, HAS_DLAST=True, **modes),
                        triton_backend.NUM_WARPS))
    tiles = dict(K=4, BLOCK_D=conv1d.BLOCK_D, BLOCK_L=conv1d.BLOCK_L)
    for fn in (conv_kernels.conv_fwd_kernel, conv_kernels.conv_bwd_preact_kernel,
               conv_kernels.conv_bwd_input_kernel):
        configs.append((fn, tiles, conv1d.NUM_WARPS))
    return [dict(fn=fn, constexprs=c, num_warps=w) for fn, c, w in configs]


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', type=int, default=90, help='CUDA compute capability x10 (90: H100/H200)')
    parser.add_argument('--state', type=int, nargs='+', default=[16], help='state sizes N')
    args = parser.parse_args(argv)
    rows = []
    print(f'sm_{args.arch}:\n| kernel | N | tiles | warps | registers | spill stores / loads (bytes) | shared |')
    for n_state in args.state:
        for cfg in launched_configs(n_state):
            row = compile_kernel(cfg['fn'], cfg['constexprs'], cfg['num_warps'], args.arch)
            tiles = {k: v for k, v in cfg['constexprs'].items()
                     if k.startswith(('BLOCK', 'K', 'BIDIR', 'ATROUS'))}
            print(f"| {row['kernel']} | {n_state} | {tiles} | {row['num_warps']} | {row['registers']} | "
                  f"{row['spill_stores']} / {row['spill_loads']} | {row['shared']} |", flush=True)
            rows.append(dict(row, n_state=n_state, tiles=tiles))
    return rows


if __name__ == '__main__':
    main()
