"""``triton`` backend of :func:`mmvssm.ops.selective_scan`: fused forward and backward Triton kernels.

Triton ships with the CUDA builds of torch, so this backend needs nothing compiled by the user. The kernels
(:mod:`.triton_scan_kernels`) keep the state in float32 for fp32/bf16/fp16 inputs, read every input through
its strides in its own dtype (no contiguous copies, no casts on the way in), fuse softplus/delta_bias, the
D skip and the silu(z) gate, and recompute the chunk states in the backward from the state saved at every
chunk boundary (batch, dim, ceil(L / chunk), N).

On CPU tensors the kernels run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before mmvssm
imports Triton), which is how CI checks them; ``auto`` never picks the interpreter.
"""
import contextlib
import functools
import importlib.util
import logging
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .scan_backend import ATROUS, BIDIRECTIONAL, PLAIN, ScanBackend
from .scan_utils import as_groups, cdiv

# Limits and tiles. A chunk tile is (BLOCK_L, BLOCK_D, BLOCK_N) float32: the BLOCK_L time steps of a chunk
# inside each thread, N then channels across lanes, channels across warps (see .triton_scan_kernels). The
# default tiles compile for sm_90 without spills (tools/analysis_tools/triton_resources.py); on a GPU the
# autotuner picks among TUNED_TILES per (channels, N, length bucket, batch) unless MMVSSM_TRITON_AUTOTUNE=0.
# Triton's interpreter costs per operation, not per element: there the chunks are longer (fewer loop
# iterations, the same arithmetic).
MAX_STATE = 256
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TRAIN_BLOCK_L = 16  # chunk length when the forward saves the states the backward restarts from
INTERPRETER_BLOCK_L = 64
DEFAULT_TILE = dict(BLOCK_D=8, BLOCK_L=16, num_warps=4, HALVES=True)
# (BLOCK_D, BLOCK_L, num_warps, num_stages, HALVES); BLOCK_L is the inference chunk (training:
# TRAIN_BLOCK_L); HALVES (the forward's state as two halves of N) applies to the forward kernel only.
TUNED_TILES = ((8, 16, 4, 1, True), (8, 32, 4, 1, True), (16, 16, 8, 1, True),
               (4, 16, 2, 1, False), (8, 16, 4, 1, False), (16, 16, 4, 1, False), (16, 16, 8, 1, False))


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
        return interpreting() or _recorded_launches is not None
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
    if u.device.type == 'cpu' and not interpreting() and _recorded_launches is None:
        return 'the tensors are on the CPU; Triton runs them only under TRITON_INTERPRET=1'
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return 'a TorchScript/ONNX export is in progress, a Triton kernel cannot be traced'
    return None


def _kernels():
    from . import triton_scan_kernels
    return triton_scan_kernels


def _pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def state_block(n_state: int) -> int:
    """BLOCK_N: N rounded up to a power of two, at least 2 (the forward may hold it as two halves)."""
    return max(2, _pow2(n_state))


def fit_tile(kernel_name: str, block_n: int, tile: Dict[str, Any]) -> Dict[str, Any]:
    """``tile`` for ``kernel_name`` (HALVES kept for the forward only) with BLOCK_D raised so that the lanes
    left after the state dims, and every warp, fall on channels: otherwise Triton spreads the time steps of
    a chunk over lanes or warps and the in-thread scan becomes a shuffle or shared-memory scan."""
    tile = dict(tile)
    halves = tile.pop('HALVES', False) and kernel_name == 'selective_scan_fwd_kernel'
    if kernel_name == 'selective_scan_fwd_kernel':
        tile['HALVES'] = halves
    lanes_on_channels = max(1, 32 // (block_n // 2 if halves else block_n))
    tile['BLOCK_D'] = max(tile['BLOCK_D'], lanes_on_channels * tile['num_warps'])
    return tile


def chunk_length(tile_chunk: int, training: bool) -> int:
    """The chunk length a launch uses: the tile's, or the saved-state layout's when training."""
    if interpreting():
        return INTERPRETER_BLOCK_L
    return TRAIN_BLOCK_L if training else tile_chunk


def tile_configs(kernel_name: str, block_n: int, training: bool) -> List[Dict[str, Any]]:
    """The tiles a launch of ``kernel_name`` may use for N padded to ``block_n``: the autotuner's space.
    Each: BLOCK_D, BLOCK_L, num_warps, num_stages (and HALVES for the forward)."""
    configs = []
    for block_d, block_l, warps, stages, halves in TUNED_TILES:
        cfg = fit_tile(kernel_name, block_n, dict(BLOCK_D=block_d, BLOCK_L=chunk_length(block_l, training),
                                                  num_warps=warps, num_stages=stages, HALVES=halves))
        if cfg not in configs:
            configs.append(cfg)
    return configs


def default_tile(kernel_name: str, block_n: int, training: bool) -> Dict[str, Any]:
    """The tile launched without autotuning (interpreter, MMVSSM_TRITON_AUTOTUNE=0)."""
    tile = fit_tile(kernel_name, block_n, DEFAULT_TILE)
    tile['BLOCK_L'] = chunk_length(tile['BLOCK_L'], training)
    return tile


def autotuning() -> bool:
    """Whether CUDA launches are autotuned (MMVSSM_TRITON_AUTOTUNE=0 turns it off)."""
    return os.environ.get('MMVSSM_TRITON_AUTOTUNE', '1') != '0' and not interpreting()


# dB/dC are summed atomically by the backward: each autotuner trial must start from zero.
_ATOMIC_OUTPUTS = {'selective_scan_bwd_kernel': ['dB_ptr', 'dC_ptr']}
_TUNING_KEY = ['groups', 'dim_per_group', 'N', 'length_bucket', 'batch']


@functools.lru_cache(maxsize=None)
def _autotuned(kernel_name: str, block_n: int, training: bool):
    import triton
    configs = [triton.Config({k: v for k, v in cfg.items() if k not in ('num_warps', 'num_stages')},
                             num_warps=cfg['num_warps'], num_stages=cfg['num_stages'])
               for cfg in tile_configs(kernel_name, block_n, training)]
    return triton.autotune(configs, key=_TUNING_KEY,
                           reset_to_zero=_ATOMIC_OUTPUTS.get(kernel_name))(getattr(_kernels(), kernel_name))


# A tool (triton_resources.py) may record launches instead of running them: list of dicts, or None.
_recorded_launches: Optional[List[Dict[str, Any]]] = None


@contextlib.contextmanager
def recording_launches() -> Iterator[List[Dict[str, Any]]]:
    """Within the block, scan-kernel launches are recorded (kernel, arguments, tile) instead of run, and the
    backend accepts CPU tensors: the outputs are left uninitialised. For compiling the real calls of a model
    on a machine without a GPU."""
    global _recorded_launches
    previous, _recorded_launches = _recorded_launches, []
    try:
        yield _recorded_launches
    finally:
        _recorded_launches = previous


def _record(kernel, args: tuple, options: Dict[str, Any],
            alternatives: Optional[List[Dict[str, Any]]] = None) -> bool:
    """Record a launch (its compile-time options, and the autotuner's alternatives) instead of running it,
    when a tool asked for it (see :func:`recording_launches`)."""
    if _recorded_launches is None:
        return False
    _recorded_launches.append(dict(kernel=kernel, args=args, options=options, alternatives=alternatives or []))
    return True


def _launch(kernel_name: str, rows: int, dim_g: int, args: tuple, flags: Dict[str, Any], block_n: int,
            training: bool, device: torch.device) -> None:
    """Launch a scan kernel over (channel blocks, rows), inside the tensors' device, autotuned on CUDA."""
    def options(tile):
        return dict(flags, **tile)

    if _record(getattr(_kernels(), kernel_name), args, options(default_tile(kernel_name, block_n, training)),
               [options(cfg) for cfg in tile_configs(kernel_name, block_n, training)]):
        return
    if device.type == 'cuda' and autotuning():
        kernel = _autotuned(kernel_name, block_n, training)
        tile = {}
    else:
        kernel = getattr(_kernels(), kernel_name)
        tile = default_tile(kernel_name, block_n, training)
        tile.pop('num_stages', None)

    def grid(meta):
        return cdiv(dim_g, meta['BLOCK_D']), rows

    with _on(device):
        kernel[grid](*args, **flags, **tile)


def _on(device: torch.device):
    """Launch inside the tensors' device: Triton launches on the *current* CUDA device otherwise."""
    return torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()


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
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, layout, half_map, out_dtype,
                grad_enabled):
        batch, groups, dim_g, length = u.shape
        n_state = A.shape[-1]
        block_n = state_block(n_state)
        # grad mode is off inside forward(): the caller's, taken before apply, says whether to save states
        save = grad_enabled and any(ctx.needs_input_grad[:8])
        dev = u.device
        out = torch.empty({PLAIN: (batch, groups, dim_g, length), BIDIRECTIONAL: (batch, length, dim_g),
                           ATROUS: (batch, groups * length, dim_g)}[layout], dtype=out_dtype or u.dtype,
                          device=dev)
        if layout == BIDIRECTIONAL:  # (batch, 1, Dg, L) over (batch, L, Dg) memory: what out_proj reads
            out = out.transpose(1, 2).unsqueeze(1)
        last = torch.empty((batch, groups * dim_g, n_state), dtype=torch.float32, device=dev)
        ckpt = torch.empty((batch, groups * dim_g, cdiv(length, chunk_length(0, True)), n_state) if save else (1, ),
                           dtype=torch.float32, device=dev)
        rows = batch * (1 if layout == BIDIRECTIONAL else groups)
        pointers, strides, flags = _input_args(u, delta, A, B, C, D, z, delta_bias, layout)
        args = (*pointers, out, last, ckpt, groups, dim_g, length, n_state, batch, _pow2(length),
                *strides, *_out_strides(out, layout), *(half_map or (1, 1)))
        _launch('selective_scan_fwd_kernel', rows, dim_g, args,
                dict(flags, SOFTPLUS=bool(delta_softplus), SAVE_CKPT=save, BLOCK_N=block_n), block_n, save, dev)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt)
            ctx.options = (bool(delta_softplus), layout, half_map)
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
        delta_softplus, layout, half_map = ctx.options
        batch, groups, dim_g, length = u.shape
        n_state = A.shape[-1]
        block_n = state_block(n_state)
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
        rows = batch * (1 if layout == BIDIRECTIONAL else groups)
        pointers, strides, flags = _input_args(u, delta, A, B, C, D, z, delta_bias, layout)
        args = (*pointers, dout, _or(dlast, dA).contiguous(), ckpt, du, ddelta, _or(dz, du), dA, dB, dC, dD,
                dbias, groups, dim_g, length, n_state, batch, _pow2(length),
                *strides, *_out_strides(dout, layout), *_strides(dz, 4, layout == BIDIRECTIONAL),
                *(half_map or (1, 1)))
        _launch('selective_scan_bwd_kernel', rows, dim_g, args,
                dict(flags, SOFTPLUS=delta_softplus, HAS_DLAST=dlast is not None, BLOCK_N=block_n), block_n,
                True, dev)
        return (du, ddelta, dA.sum(0).view(A.shape).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                None if D is None else dD.sum(0).view(D.shape).to(D.dtype), dz,
                None if delta_bias is None else dbias.sum(0).view(delta_bias.shape).to(delta_bias.dtype),
                None, None, None, None, None)


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
        by_group(delta_bias, 0), bool(delta_softplus), PLAIN, None, None, torch.is_grad_enabled())
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
                                          delta_bias, bool(delta_softplus), BIDIRECTIONAL, None, None,
                                          torch.is_grad_enabled())
    return out.squeeze(1)


def atrous_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       delta_bias: Optional[Tensor], delta_softplus: bool, padded_hw: Tuple[int, int],
                       out_dtype: torch.dtype) -> Tensor:
    """:func:`mmvssm.ops.atrous_scan` in one kernel: each output token is written at its map position.
    Returns (batch, H, W, dim) of the padded (even) map."""
    _refuse(unsupported_reason(u, A))
    height, width = padded_hw
    out, _ = _SelectiveScanTritonFn.apply(u, delta, A, B, C, D, None, delta_bias, bool(delta_softplus),
                                          ATROUS, (height // 2, width // 2), out_dtype,
                                          torch.is_grad_enabled())
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
        args = (u, w0, w1, b0, b1, y, dim, length, *u.stride(), *w0.stride(), *w1.stride())
        tiles = dict(K=k, BLOCK_D=CONV_BLOCK_D, BLOCK_L=CONV_BLOCK_L, num_warps=CONV_NUM_WARPS)
        if not _record(kernels.conv_fwd_kernel, args, tiles):
            with _on(u.device):
                kernels.conv_fwd_kernel[grid](*args, **tiles)
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
        du = torch.empty((batch, dim, length), dtype=u.dtype, device=u.device)
        preact_args = (u, w0, w1, b0, b1, dy, g, dw0, dw1, db0, db1, dim, length, *u.stride(), *w0.stride(),
                       *w1.stride(), *dy.stride())
        input_args = (g, w0, w1, du, dim, length, *w0.stride(), *w1.stride())
        if _recorded_launches is not None:
            _record(kernels.conv_bwd_preact_kernel, preact_args, tiles)
            _record(kernels.conv_bwd_input_kernel, input_args, tiles)
        else:
            with _on(u.device):
                kernels.conv_bwd_preact_kernel[grid](*preact_args, **tiles)
                kernels.conv_bwd_input_kernel[grid](*input_args, **tiles)
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
