"""``triton`` backend of :func:`mmvssm.ops.selective_scan`: fused forward and backward Triton kernels.

Triton ships with the CUDA builds of torch, so this backend needs nothing compiled by the user. The kernels
(:mod:`.triton_scan_kernels`) keep the state in float32 for fp32/bf16/fp16 inputs, read every input through
its strides in its own dtype (no contiguous copies, no casts on the way in), fuse softplus/delta_bias, the
D skip and the silu(z) gate, and recompute the chunk states in the backward from the state saved at every
chunk boundary (batch, dim, ceil(L / chunk), N).

On CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before mmvssm
imports Triton), which is how CI checks them; ``auto`` never picks the interpreter.
"""
import functools
import importlib.util
import logging
import os
import warnings
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .scan_backend import ATROUS, BIDIRECTIONAL, PLAIN, ScanBackend
from .scan_utils import as_groups, cdiv

# Limits and defaults. The kernels hold (BLOCK_D, N, BLOCK_L) float32 tiles. 4 channels x 16 states x 32
# steps with 4 warps compile for sm_90 without register spills (at most 167 / 235 registers a thread, fwd /
# bwd; 64 steps spill 0.8 KB in the backward): tools/analysis_tools/triton_resources.py. Not timed on a GPU.
MAX_STATE = 256
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BLOCK_D = 4
MAX_TILE = 2048
MAX_CHUNK = 64
NUM_WARPS = 4


def interpreting() -> bool:
    """True when Triton's interpreter is on (it runs the kernels on CPU tensors)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    return importlib.util.find_spec('triton') is not None


def is_available(device: Optional[torch.device] = None) -> bool:
    """True when Triton is installed and can run on ``device`` (CUDA, or CPU under the interpreter).

    On CUDA the first call compiles and runs a tiny scan: a Triton that imports but cannot build kernels
    (no C compiler for its launcher, a driver too old for its PTX) is then reported once, loudly, and
    counted as unavailable rather than failing inside a model's forward.
    """
    if not _triton_installed():
        return False
    if device is not None and device.type == 'cpu':
        return interpreting()
    if interpreting():
        return True
    return torch.cuda.is_available() and cuda_failure() is None


@functools.lru_cache(maxsize=None)
def cuda_failure() -> Optional[str]:
    """Why the kernels cannot run on this machine's GPU (None when a tiny scan compiles and runs)."""
    try:
        _smoke_test()
    except Exception as err:  # compiler, driver or launcher errors all mean the same to the user
        reason = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
        message = (f'mmvssm: Triton is installed but its kernels do not run on this GPU ({reason}); the '
                   'triton scan backend is unavailable. Triton needs a C compiler (e.g. `apt-get install '
                   'gcc`) and a driver that supports its CUDA version.')
        warnings.warn(message, RuntimeWarning)
        logging.getLogger('mmvssm').warning(message)
        return reason
    return None


def _smoke_test() -> None:
    u = torch.ones(1, 1, 2, device='cuda')
    selective_scan_triton(u, u, -u[0, :, :1], u, u)
    torch.cuda.synchronize()


def unsupported_reason(u: Tensor, A: Tensor) -> Optional[str]:
    """Why the kernels cannot run these inputs, or None when they can."""
    if u.dtype not in KERNEL_DTYPES:
        return f'`u` is {u.dtype}, the kernels support {", ".join(map(str, KERNEL_DTYPES))}'
    if A.shape[-1] > MAX_STATE:
        return f'N = {A.shape[-1]} state dims, the kernels support N <= {MAX_STATE}'
    if u.device.type == 'cpu' and not interpreting():
        return 'the tensors are on the CPU; Triton runs them only under TRITON_INTERPRET=1'
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return 'a TorchScript/ONNX export is in progress, a Triton kernel cannot be traced'
    return None


def _kernels():
    from . import triton_scan_kernels
    return triton_scan_kernels


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_sizes(n_state: int, length: int) -> Tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, BLOCK_L) for N state dims and L steps."""
    block_n = _pow2(n_state)
    chunk = max(16, min(MAX_CHUNK, MAX_TILE // (BLOCK_D * block_n)))
    return BLOCK_D, block_n, min(chunk, max(16, _pow2(length)))


def _strides(t: Optional[Tensor], ndim: int, shared_group: bool = False) -> Tuple[int, ...]:
    """Strides for the kernel; zeros for an absent tensor. ``shared_group``: (batch, 1, dim, L) read by
    every group (group stride 0)."""
    if t is None:
        return (0, ) * ndim
    strides = tuple(t.stride())
    return (strides[0], 0) + strides[2:] if shared_group else strides


# How the kernels lay out their output (and read its gradient), by the layouts of .scan_backend:
# PLAIN: (batch, G, Dg, L), each group its own channels. BIDIRECTIONAL: (batch, 1, Dg, L) view of (batch, L,
# Dg) memory, group 0 forwards + group 1 backwards in time, summed. ATROUS: (batch, H * W, Dg),
# EfficientVMamba's 4 skip-sampled directions at their map positions.


def _out_strides(t: Tensor, layout: str) -> Tuple[int, ...]:
    """(batch, group, channel, L) strides of an output (or its gradient) in ``layout``."""
    if layout == ATROUS:  # (batch, position, channel): the kernel computes the position from (group, t)
        return t.stride(0), 0, t.stride(2), t.stride(1)
    return _strides(t, 4, layout == BIDIRECTIONAL)


def _input_args(u, delta, A, B, C, D, z, delta_bias, layout: str):
    """What forward and backward kernels share: the input pointers (a placeholder where absent), their
    strides, and the HAS_* flags."""
    pointers = (u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u))
    strides = (*u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides(D, 2),
               *_strides(z, 4, layout == BIDIRECTIONAL), *_strides(delta_bias, 2))
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 BIDIRECTIONAL=layout == BIDIRECTIONAL, ATROUS=layout == ATROUS)
    return pointers, strides, flags


class _SelectiveScanTritonFn(torch.autograd.Function):
    """Per-channel tensors as (batch, G, Dg, L) views, any strides: u, delta, and z (batch, G or 1, Dg, L);
    A (G, Dg, N); B, C (batch, G, N, L); D, delta_bias (G, Dg).

    ``layout`` (:data:`PLAIN`, :data:`BIDIRECTIONAL`, :data:`ATROUS`) sets the output: see there. In
    ``BIDIRECTIONAL`` (G = 2) z is (batch, 1, Dg, L), shared by both directions; ``ATROUS`` (G = 4, no z)
    takes the half map size ``(H2, W2)`` with L = H2 * W2. ``out_dtype``: the output's dtype (default u's).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, layout, half_map, out_dtype):
        batch, groups, dim_g, length = u.shape
        n_state = A.shape[-1]
        block_d, block_n, block_l = tile_sizes(n_state, length)
        n_chunks = max(1, cdiv(length, block_l))
        save = any(ctx.needs_input_grad[:8])
        dev = u.device
        out = torch.empty({PLAIN: (batch, groups, dim_g, length), BIDIRECTIONAL: (batch, length, dim_g),
                           ATROUS: (batch, groups * length, dim_g)}[layout], dtype=out_dtype or u.dtype,
                          device=dev)
        if layout == BIDIRECTIONAL:  # (batch, 1, Dg, L) over (batch, L, Dg) memory: what out_proj reads
            out = out.transpose(1, 2).unsqueeze(1)
        last = torch.empty((batch, groups * dim_g, n_state), dtype=torch.float32, device=dev)
        ckpt = torch.empty((batch, groups * dim_g, n_chunks, n_state) if save else (1, ),
                           dtype=torch.float32, device=dev)
        grid = (cdiv(dim_g, block_d), batch * (1 if layout == BIDIRECTIONAL else groups))
        pointers, strides, flags = _input_args(u, delta, A, B, C, D, z, delta_bias, layout)
        _kernels().selective_scan_fwd_kernel[grid](
            *pointers, out, last, ckpt, groups, dim_g, length, n_state, n_chunks,
            *strides, *_out_strides(out, layout), *(half_map or (1, 1)),
            SOFTPLUS=bool(delta_softplus), SAVE_CKPT=save, **flags,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, num_warps=NUM_WARPS)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.options = (bool(delta_softplus), layout, half_map)
            ctx.tiles = (block_d, block_n, block_l, n_chunks)
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        delta_softplus, layout, half_map = ctx.options
        batch, groups, dim_g, length = u.shape
        n_state = A.shape[-1]
        block_d, block_n, block_l, n_chunks = ctx.tiles
        dev = u.device
        if dout is None:  # only the last state reached the loss: a broadcast zero, nothing allocated
            dout = torch.zeros((1, 1, 1, 1), dtype=u.dtype, device=dev).expand(batch, groups, dim_g, length)
            layout = PLAIN if layout == ATROUS else layout
        du = torch.empty(u.shape, dtype=u.dtype, device=dev)
        ddelta = torch.empty(delta.shape, dtype=delta.dtype, device=dev)
        dz = torch.empty(z.shape, dtype=z.dtype, device=dev) if z is not None else None
        dA = torch.empty((batch, groups * dim_g, n_state), dtype=torch.float32, device=dev)
        dB = torch.zeros((batch, groups, n_state, length), dtype=torch.float32, device=dev)
        dC = torch.zeros_like(dB)
        dD = torch.empty((batch, groups * dim_g), dtype=torch.float32, device=dev)
        dbias = torch.empty_like(dD)
        grid = (cdiv(dim_g, block_d), batch * (1 if layout == BIDIRECTIONAL else groups))
        pointers, strides, flags = _input_args(u, delta, A, B, C, D, z, delta_bias, layout)
        _kernels().selective_scan_bwd_kernel[grid](
            *pointers, dout, _or(dlast, dA).contiguous(), ckpt,
            du, ddelta, _or(dz, du), dA, dB, dC, dD, dbias,
            groups, dim_g, length, n_state, n_chunks,
            *strides, *_out_strides(dout, layout), *_strides(dz, 4, layout == BIDIRECTIONAL),
            *(half_map or (1, 1)),
            SOFTPLUS=delta_softplus, HAS_DLAST=dlast is not None, **flags,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, num_warps=NUM_WARPS)
        return (du, ddelta, dA.sum(0).view(A.shape).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                None if D is None else dD.sum(0).view(D.shape).to(D.dtype), dz,
                None if delta_bias is None else dbias.sum(0).view(delta_bias.shape).to(delta_bias.dtype),
                None, None, None, None)


def _or(t: Optional[Tensor], placeholder: Tensor) -> Tensor:
    """A pointer for an optional input the kernel does not read (its HAS_* flag is off)."""
    return placeholder if t is None else t


def selective_scan_triton(u: Tensor,
                          delta: Tensor,
                          A: Tensor,
                          B: Tensor,
                          C: Tensor,
                          D: Optional[Tensor] = None,
                          z: Optional[Tensor] = None,
                          delta_bias: Optional[Tensor] = None,
                          delta_softplus: bool = False,
                          return_last_state: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan with the Triton kernels (inputs validated by ``selective_scan``).

    Same arguments and results as :func:`mmvssm.ops.selective_scan`; the last state is differentiable.
    """
    _refuse(unsupported_reason(u, A))
    batch, dim, length = u.shape
    B, C = as_groups(B), as_groups(C)
    groups = B.shape[1]

    def by_group(t: Optional[Tensor], axis: int) -> Optional[Tensor]:  # split channels into groups (a view)
        return None if t is None else t.unflatten(axis, (groups, dim // groups))

    out, last = _SelectiveScanTritonFn.apply(
        by_group(u, 1), by_group(delta, 1), by_group(A, 0), B, C, by_group(D, 0), by_group(z, 1),
        by_group(delta_bias, 0), bool(delta_softplus), PLAIN, None, None)
    out = out.view(batch, dim, length)
    return (out, last.to(u.dtype)) if return_last_state else out


def bidirectional_scan_triton(u: Tensor,
                              delta: Tensor,
                              A: Tensor,
                              B: Tensor,
                              C: Tensor,
                              D: Optional[Tensor] = None,
                              z: Optional[Tensor] = None,
                              delta_bias: Optional[Tensor] = None,
                              delta_softplus: bool = False) -> Tensor:
    """:func:`mmvssm.ops.bidirectional_scan` in one fused kernel: the second direction runs backwards in
    time over the stored order (no flips), both outputs summed in the kernel."""
    _refuse(unsupported_reason(u, A))
    out, _ = _SelectiveScanTritonFn.apply(u, delta, A, B, C, D, None if z is None else z.unsqueeze(1),
                                          delta_bias, bool(delta_softplus), BIDIRECTIONAL, None, None)
    return out.squeeze(1)


def atrous_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       delta_bias: Optional[Tensor], delta_softplus: bool, padded_hw: Tuple[int, int],
                       out_dtype: torch.dtype) -> Tensor:
    """:func:`mmvssm.ops.atrous_scan` in one kernel: each output token is written at its map position.
    Returns (batch, H, W, dim) of the padded (even) map."""
    _refuse(unsupported_reason(u, A))
    height, width = padded_hw
    out, _ = _SelectiveScanTritonFn.apply(u, delta, A, B, C, D, None, delta_bias, bool(delta_softplus),
                                          ATROUS, (height // 2, width // 2), out_dtype)
    return out.view(u.shape[0], height, width, u.shape[2])


def _refuse(reason: Optional[str]) -> None:
    if reason is not None:
        raise RuntimeError(f'selective_scan: backend "triton" cannot run these inputs: {reason}; '
                           'use backend="chunked" instead')


# --------------------------------------------------------------------------------------------------
# Vim's conv1d + SiLU of both directions (kernels in :mod:`.triton_conv_kernels`)
# --------------------------------------------------------------------------------------------------
CONV_BLOCK_D, CONV_BLOCK_L, CONV_NUM_WARPS = 16, 64, 4  # (channels, steps) a program


class _BidirectionalConvTritonFn(torch.autograd.Function):
    """u (batch, dim, L), any strides; weights (dim, K); biases (dim,)."""

    @staticmethod
    def forward(ctx, u, w0, b0, w1, b1):
        from . import triton_conv_kernels as kernels
        batch, dim, length = u.shape
        k = w0.shape[-1]
        y = torch.empty((batch, 2, dim, length), dtype=u.dtype, device=u.device)
        grid = (cdiv(dim, CONV_BLOCK_D), batch, cdiv(length, CONV_BLOCK_L))
        kernels.conv_fwd_kernel[grid](u, w0, w1, b0, b1, y, dim, length, *u.stride(), *w0.stride(),
                                      *w1.stride(), K=k, BLOCK_D=CONV_BLOCK_D, BLOCK_L=CONV_BLOCK_L,
                                      num_warps=CONV_NUM_WARPS)
        ctx.save_for_backward(u, w0, b0, w1, b1)
        return y

    @staticmethod
    def backward(ctx, dy):
        from . import triton_conv_kernels as kernels
        u, w0, b0, w1, b1 = ctx.saved_tensors
        batch, dim, length = u.shape
        k = w0.shape[-1]
        f32 = dict(dtype=torch.float32, device=u.device)
        g = torch.empty((batch, 2, dim, length), **f32)
        dw0, dw1 = torch.zeros((dim, k), **f32), torch.zeros((dim, k), **f32)
        db0, db1 = torch.zeros(dim, **f32), torch.zeros(dim, **f32)
        grid = (cdiv(dim, CONV_BLOCK_D), batch, cdiv(length, CONV_BLOCK_L))
        tiles = dict(K=k, BLOCK_D=CONV_BLOCK_D, BLOCK_L=CONV_BLOCK_L, num_warps=CONV_NUM_WARPS)
        kernels.conv_bwd_preact_kernel[grid](u, w0, w1, b0, b1, dy, g, dw0, dw1, db0, db1, dim, length,
                                             *u.stride(), *w0.stride(), *w1.stride(), *dy.stride(), **tiles)
        du = torch.empty((batch, dim, length), dtype=u.dtype, device=u.device)
        kernels.conv_bwd_input_kernel[grid](g, w0, w1, du, dim, length, *w0.stride(), *w1.stride(), **tiles)
        return du, dw0.to(w0.dtype), db0.to(b0.dtype), dw1.to(w1.dtype), db1.to(b1.dtype)


def bidirectional_conv1d_silu_triton(u: Tensor, w0: Tensor, b0: Optional[Tensor], w1: Tensor,
                                     b1: Optional[Tensor]) -> Tensor:
    """Both directions in the stored order, one kernel (weights (dim, 1, K), power-of-two K)."""
    k = w0.shape[-1]
    if k & (k - 1):
        raise RuntimeError(f'bidirectional_conv1d_silu: the Triton kernel needs a power-of-two kernel size, '
                           f'got {k}; use backend="chunked" (PyTorch conv)')
    if b0 is None or b1 is None:  # a missing bias contributes nothing
        zeros = u.new_zeros(u.shape[1])
        b0, b1 = (zeros if b0 is None else b0), (zeros if b1 is None else b1)
    return _BidirectionalConvTritonFn.apply(u, w0.squeeze(1), b0, w1.squeeze(1), b1)


class TritonBackend(ScanBackend):
    """Fused Triton kernels, every layout: CUDA tensors (``auto``'s second choice there), or CPU tensors
    under ``TRITON_INTERPRET=1`` (only when asked for)."""
    name = 'triton'
    device_types = frozenset({'cuda', 'cpu'})
    auto_rank = {'cuda': 20}
    layouts = frozenset({PLAIN, BIDIRECTIONAL, ATROUS})
    missing_hint = ('Triton is not installed, cannot build kernels here (see the warning it gave), or the '
                    'tensors are not on a CUDA device (CPU tensors run only under Triton\'s interpreter, '
                    'TRITON_INTERPRET=1 set before import); `pip install triton`')

    def is_available(self, device: Optional[torch.device] = None) -> bool:
        return super().is_available(device) and is_available(device)

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        reason = super().unavailable_reason(device)
        if reason is not None and device.type == 'cuda' and _triton_installed() and cuda_failure() is not None:
            return f'not available: its kernels do not run on this GPU ({cuda_failure()})'
        return reason

    def unsupported_reason(self, u: Tensor, A: Tensor) -> Optional[str]:
        return unsupported_reason(u, A)

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    def bidirectional_conv1d_silu(self, u, w0, b0, w1, b1):
        return bidirectional_conv1d_silu_triton(u, w0, b0, w1, b1)

    def bidirectional_scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        return bidirectional_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus)

    def atrous_scan(self, xs, delta, A, B, C, D, delta_bias, delta_softplus, height, width):
        padded = (height + height % 2, width + width % 2)
        y = atrous_scan_triton(xs, delta, A, B, C, D, delta_bias, delta_softplus, padded,
                               torch.promote_types(xs.dtype, torch.float32))
        return y[:, :height, :width]


TRITON = TritonBackend()
