"""Triton kernels of :func:`mmvssm.ops.bidirectional_conv1d_silu` (imported lazily).

Vim's two directions each run a depthwise causal conv1d + SiLU over the same (batch, dim, L) input: the
forward direction causally, the backward direction (official: flip, causal conv, flip back) as an
anti-causal conv with its taps reversed. One kernel reads the input tile once per tap and writes both
directions into a (batch, 2, dim, L) output, nothing flipped or concatenated:

    p0[t] = b0 + sum_k w0[k] u[t - (K-1) + k],    p1[t] = b1 + sum_k w1[k] u[t + (K-1) - k],
    y_j = silu(p_j).
"""
import triton
import triton.language as tl


@triton.jit
def _program_tile(dim, L, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's channels d, batch b (int64: batch offsets may pass 2**31 elements) and positions offs
    (grid: channel blocks, batch, L blocks), with the channel and (channel, position) masks."""
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_d = d < dim
    return d, tl.program_id(1).to(tl.int64), offs, mask_d, mask_d[:, None] & (offs < L)[None, :]


@triton.jit
def _shifted(u_row, offs, shift, mask_d, L, s_u_l):
    """u at positions offs + shift as float32 (BLOCK_D, BLOCK_L), zero outside [0, L)."""
    pos = offs + shift
    return tl.load(u_row + pos[None, :] * s_u_l, mask=mask_d[:, None] & ((pos >= 0) & (pos < L))[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def _tap(w, k, K: tl.constexpr):
    """Column k of a (BLOCK_D, K) weight tile."""
    return tl.sum(tl.where(tl.arange(0, K)[None, :] == k, w, 0.0), axis=1)


@triton.jit
def _preact(u_row, w0, w1, b0, b1, offs, mask_d, L, s_u_l, K: tl.constexpr, BLOCK_D: tl.constexpr,
            BLOCK_L: tl.constexpr):
    """(p0, p1), each (BLOCK_D, BLOCK_L) float32, at positions ``offs``."""
    p0 = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32) + b0[:, None]
    p1 = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32) + b1[:, None]
    for k in tl.static_range(K):
        p0 += _tap(w0, k, K)[:, None] * _shifted(u_row, offs, k - (K - 1), mask_d, L, s_u_l)
        p1 += _tap(w1, k, K)[:, None] * _shifted(u_row, offs, (K - 1) - k, mask_d, L, s_u_l)
    return p0, p1


@triton.jit
def _load_weights(w0_ptr, w1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k, K: tl.constexpr):
    """Both directions' (BLOCK_D, K) taps as float32."""
    taps = tl.arange(0, K)
    w0 = tl.load(w0_ptr + d[:, None] * s_w0_d + taps[None, :] * s_w0_k, mask=mask_d[:, None],
                 other=0.0).to(tl.float32)
    w1 = tl.load(w1_ptr + d[:, None] * s_w1_d + taps[None, :] * s_w1_k, mask=mask_d[:, None],
                 other=0.0).to(tl.float32)
    return w0, w1


@triton.jit
def _load_taps(w0_ptr, w1_ptr, b0_ptr, b1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
               K: tl.constexpr):
    """Weights and biases of both directions, float32."""
    w0, w1 = _load_weights(w0_ptr, w1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k, K)
    b0 = tl.load(b0_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    b1 = tl.load(b1_ptr + d, mask=mask_d, other=0.0).to(tl.float32)
    return w0, w1, b0, b1


@triton.jit
def conv_fwd_kernel(u_ptr, w0_ptr, w1_ptr, b0_ptr, b1_ptr, y_ptr,
                    dim, L, s_u_b, s_u_d, s_u_l, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
                    K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """Grid (channel blocks, batch, L blocks); y (batch, 2, dim, L) contiguous."""
    d, b, offs, mask_d, mask = _program_tile(dim, L, BLOCK_D, BLOCK_L)
    w0, w1, b0, b1 = _load_taps(w0_ptr, w1_ptr, b0_ptr, b1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
                                K)
    p0, p1 = _preact(u_ptr + b * s_u_b + d[:, None] * s_u_d, w0, w1, b0, b1, offs, mask_d, L, s_u_l, K,
                     BLOCK_D, BLOCK_L)
    y_row = y_ptr + ((b * 2) * dim + d[:, None]) * L + offs[None, :]
    tl.store(y_row, (p0 * tl.sigmoid(p0)).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(y_row + dim * L, (p1 * tl.sigmoid(p1)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv_bwd_preact_kernel(u_ptr, w0_ptr, w1_ptr, b0_ptr, b1_ptr, dy_ptr, g_ptr, dw0_ptr, dw1_ptr, db0_ptr,
                           db1_ptr, dim, L, s_u_b, s_u_d, s_u_l, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
                           s_dy_b, s_dy_k, s_dy_d, s_dy_l,
                           K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """g_j = dy_j * silu'(p_j) into g (batch, 2, dim, L) float32, and the weight/bias gradients (float32
    (dim, K) / (dim,), accumulated atomically over batch and L blocks)."""
    d, b, offs, mask_d, mask = _program_tile(dim, L, BLOCK_D, BLOCK_L)
    w0, w1, b0, b1 = _load_taps(w0_ptr, w1_ptr, b0_ptr, b1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
                                K)
    u_row = u_ptr + b * s_u_b + d[:, None] * s_u_d
    p0, p1 = _preact(u_row, w0, w1, b0, b1, offs, mask_d, L, s_u_l, K, BLOCK_D, BLOCK_L)
    dy_row = dy_ptr + b * s_dy_b + d[:, None] * s_dy_d + offs[None, :] * s_dy_l
    dy0 = tl.load(dy_row, mask=mask, other=0.0).to(tl.float32)
    dy1 = tl.load(dy_row + s_dy_k, mask=mask, other=0.0).to(tl.float32)
    s0, s1 = tl.sigmoid(p0), tl.sigmoid(p1)
    g0 = tl.where(mask, dy0 * s0 * (1.0 + p0 * (1.0 - s0)), 0.0)
    g1 = tl.where(mask, dy1 * s1 * (1.0 + p1 * (1.0 - s1)), 0.0)
    g_row = g_ptr + ((b * 2) * dim + d[:, None]) * L + offs[None, :]
    tl.store(g_row, g0, mask=mask)
    tl.store(g_row + dim * L, g1, mask=mask)
    tl.atomic_add(db0_ptr + d, tl.sum(g0, axis=1), mask=mask_d, sem='relaxed')
    tl.atomic_add(db1_ptr + d, tl.sum(g1, axis=1), mask=mask_d, sem='relaxed')
    for k in tl.static_range(K):
        tl.atomic_add(dw0_ptr + d * K + k,
                      tl.sum(g0 * _shifted(u_row, offs, k - (K - 1), mask_d, L, s_u_l), axis=1), mask=mask_d, sem='relaxed')
        tl.atomic_add(dw1_ptr + d * K + k,
                      tl.sum(g1 * _shifted(u_row, offs, (K - 1) - k, mask_d, L, s_u_l), axis=1), mask=mask_d, sem='relaxed')


@triton.jit
def conv_bwd_input_kernel(g_ptr, w0_ptr, w1_ptr, du_ptr, dim, L, s_w0_d, s_w0_k, s_w1_d, s_w1_k,
                          K: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """du[s] = sum_k w0[k] g0[s + (K-1) - k] + w1[k] g1[s - (K-1) + k]; du (batch, dim, L) contiguous."""
    d, b, offs, mask_d, mask = _program_tile(dim, L, BLOCK_D, BLOCK_L)
    w0, w1 = _load_weights(w0_ptr, w1_ptr, d, mask_d, s_w0_d, s_w0_k, s_w1_d, s_w1_k, K)
    g_row = g_ptr + ((b * 2) * dim + d[:, None]) * L
    du = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for k in tl.static_range(K):
        du += _tap(w0, k, K)[:, None] * _shifted(g_row, offs, (K - 1) - k, mask_d, L, 1)
        du += _tap(w1, k, K)[:, None] * _shifted(g_row + dim * L, offs, k - (K - 1), mask_d, L, 1)
    tl.store(du_ptr + (b * dim + d[:, None]) * L + offs[None, :], du.to(du_ptr.dtype.element_ty), mask=mask)
