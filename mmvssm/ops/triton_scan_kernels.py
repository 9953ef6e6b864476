"""Triton kernels of the ``triton`` selective-scan backend (imported lazily by :mod:`.triton_backend`).

Layout. One program owns ``BLOCK_D`` channels of one (batch, group) pair and their whole (BLOCK_D, N)
state, in float32, for the entire sequence. It walks the sequence in chunks of ``BLOCK_L`` scan steps;
each chunk is a time-major tile of shape (BLOCK_L, BLOCK_D, BLOCK_N). Triton lays such a tile with the
state dims N (then the channels) across the lanes of a warp, the channels across warps, and the BLOCK_L
time steps inside each thread, so the recurrence ``h_t = a_t h_{t-1} + b_t`` (one ``tl.associative_scan``
along axis 0) is a serial multiply-add per step in registers: no shuffle, no barrier. Lanes talk only for
the output ``y_t = <h_t, C_t>`` (a sum over N) and, in the backward, the sums over channels of dB/dC.
The state leaving a chunk is its last row (in-thread) and is carried to the next chunk in registers.

Directions. A scan that runs backwards in time (``REVERSE``: h_t = a_t h_{t+1} + b_t) is the same forward
scan over *scan steps* k = 0, 1, ...; only the address changes (step k reads time L - 1 - k). That is how
Vim's second direction runs without flipping anything in memory, and it keeps every scan a forward
``associative_scan`` (a compiled ``reverse=True`` scan adds lane flips around every scan and has given
wrong results upstream, triton-lang/triton#4362). In ``BIDIRECTIONAL`` mode a program runs group 0
forwards and group 1 backwards over the same channels and sums both gated outputs into one (batch, dim, L)
result. In ``ATROUS`` mode the 4 groups are EfficientVMamba's skip-sampled directions, and each output
token is written at its position in the (H, W, channels) map (the gradient read from there).

Every per-channel tensor is addressed as (batch, group, channel, L) through four strides (a group stride
of 0 shares one tensor, e.g. Vim's gate z, between both directions). Batch and group offsets are 64-bit,
so tensors of more than 2**31 elements address correctly; offsets inside one (batch, group) slice are
32-bit.

Backward. The adjoint ``g_k = a_{k+1} g_{k+1} + C_k dy_k`` (g = dL/dh_k) runs chunk by chunk from the last
step: the forward saved only the state entering each chunk (batch, dim, n_chunks, N), from which the
chunk's states are recomputed, so nothing of size (batch, dim, L, N) is stored. Inside a chunk the adjoint
is a forward scan over the tile with its rows flipped (``tl.flip`` of an in-thread axis is a register
renaming: zero instructions). ``a_t h_{t-1} = h_t - dt_t u_t B_t`` avoids any shifted state. dB/dC are
summed over channel blocks with relaxed atomics (a sum needs no ordering; the default acq_rel adds a
full-GPU fence and an L1 invalidate per atomic).

All tensors are addressed through their strides, so non-contiguous inputs (e.g. B/C as transposed views of
a projection) are read in place, in whatever float dtype they come in.
"""
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x log2 e): A is scaled once, each decay is one MUFU.EX2


@triton.jit
def _affine_combine(a_prev, b_prev, a_cur, b_cur):
    # Composition of the maps h -> a h + b (earlier one first).
    return a_prev * a_cur, a_cur * b_prev + b_cur


@triton.jit
def _softplus(x):
    # Same threshold as torch.nn.functional.softplus (beta=1, threshold=20). log1p(e) written as
    # log(1 + e) * e / ((1 + e) - 1) (Goldberg): exact to rounding also where e << 1 and 1 + e rounds.
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _step_times(k, L, REVERSE: tl.constexpr):
    """The time index each scan step k reads: k, or (REVERSE) L - 1 - k."""
    if REVERSE:
        return L - 1 - k
    else:
        return k


@triton.jit
def _load_delta(dt_base, bias, t, mask, s_dt_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(BLOCK_L, BLOCK_D) raw delta at times ``t`` and the discretisation step (zero where masked)."""
    raw = tl.load(dt_base[None, :] + t[:, None] * s_dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _first_row_plus(x, a, h, BLOCK_L: tl.constexpr):
    """x with ``a * h`` added to its first row: the state entering a chunk folded into its first step.
    A zero h adds nothing even where a overflowed (decays > 1 are legal), which ``a * h`` would make NaN."""
    first = (tl.arange(0, BLOCK_L) == 0)[:, None, None]
    return tl.where(first & (h != 0.0)[None, :, :], x + a * h[None, :, :], x)


@triton.jit
def _last_row(x, BLOCK_L: tl.constexpr):
    """The (BLOCK_D, BLOCK_N) last row of a chunk tile (in-thread: a register pick, no shuffle)."""
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None, None]
    return tl.sum(tl.where(last, x, 0.0), axis=0)


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, g, d, n, mask_d, mask_dn, s_A_g, s_A_d, s_A_n, s_D_g, s_D_d,
                    s_bias_g, s_bias_d, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr):
    """A (BLOCK_D, BLOCK_N), D and delta_bias (BLOCK_D,) of one group's channels, float32 (zeros when
    absent)."""
    A = tl.load(A_ptr + g * s_A_g + d[:, None] * s_A_d + n[None, :] * s_A_n, mask=mask_dn,
                other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + g * s_D_g + d * s_D_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + g * s_bias_g + d * s_bias_d, mask=mask_d, other=0.0).to(tl.float32)
    return A, Dv, bias


@triton.jit
def _out_positions(t, g, H2, W2, ATROUS: tl.constexpr):
    """Where time t of direction g sits along the output's L axis: itself, or (ATROUS) its flat position
    in the (2 H2, 2 W2) map EfficientVMamba skip-samples: rows of parity g % 2, columns of parity g // 2,
    the odd directions read column-major."""
    if ATROUS:
        col_major = (g % 2) == 1
        i = tl.where(col_major, t % H2, t // W2)
        j = tl.where(col_major, t // H2, t % W2)
        return (2 * i + g % 2) * (2 * W2) + 2 * j + g // 2
    else:
        return t


@triton.jit
def _load_steps(u_base, dt_base, bias, t, mask, s_u_l, s_dt_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """u, raw delta and the step dt of one chunk (BLOCK_L, BLOCK_D), float32, at times ``t``."""
    u = tl.load(u_base[None, :] + t[:, None] * s_u_l, mask=mask, other=0.0).to(tl.float32)
    raw, dt = _load_delta(dt_base, bias, t, mask, s_dt_l, HAS_BIAS, SOFTPLUS)
    return u, raw, dt


@triton.jit
def _scan_states(dt, dtu, A2, B_base, C_base, h0, t, mask_nl, s_B_l, s_C_l, BLOCK_L: tl.constexpr):
    """Scan one chunk over the state dims that ``B_base``/``C_base``/``A2``/``h0`` address (all N, or one
    half), from the state ``h0`` entering it: B and C (BLOCK_L, n), dt u B and the states h
    (BLOCK_L, BLOCK_D, n). Masked steps have decay 1 and input 0, so the last row leaves the chunk."""
    Bt = tl.load(B_base[None, :] + t[:, None] * s_B_l, mask=mask_nl, other=0.0).to(tl.float32)
    Ct = tl.load(C_base[None, :] + t[:, None] * s_C_l, mask=mask_nl, other=0.0).to(tl.float32)
    decay = tl.exp2(dt[:, :, None] * A2[None, :, :])
    inp = dtu[:, :, None] * Bt[:, None, :]
    _, states = tl.associative_scan((decay, _first_row_plus(inp, decay, h0, BLOCK_L)), 0, _affine_combine)
    return Bt, Ct, inp, states


@triton.jit
def _scan_chunk(u_base, dt_base, B_base, C_base, A2, bias, h0, t, mask, mask_nl, s_u_l, s_dt_l, s_B_l,
                s_C_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_L: tl.constexpr):
    """Load one chunk (rows: scan steps, reading times ``t``) and scan it from ``h0`` over all N.

    Returns u, raw delta and step dt (BLOCK_L, BLOCK_D), B and C (BLOCK_L, BLOCK_N), and the inputs
    dt u B and states h (BLOCK_L, BLOCK_D, BLOCK_N)."""
    u, raw, dt = _load_steps(u_base, dt_base, bias, t, mask, s_u_l, s_dt_l, HAS_BIAS, SOFTPLUS)
    Bt, Ct, inp, states = _scan_states(dt, dt * u, A2, B_base, C_base, h0, t, mask_nl, s_B_l, s_C_l, BLOCK_L)
    return u, raw, dt, Bt, Ct, inp, states


@triton.jit
def _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
              b, g, d, groups, dim_per_group, L, N, n_chunks,
              s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
              s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
              s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              SAVE_CKPT: tl.constexpr, REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, ATROUS: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, HALVES: tl.constexpr):
    """One direction of one (batch b (int64), group g) over channels d; ACCUMULATE adds to ``out``, ATROUS
    writes each token at its map position.

    HALVES: the state is held as two halves of N, each its own (BLOCK_L, BLOCK_D, BLOCK_N / 2) tile, so
    Triton puts BLOCK_N / 2 lanes on each and y = <h, C> adds the halves in-thread before the cross-lane
    sum (one shuffle level less, over half the values), at half the threads per channel. Otherwise one
    (BLOCK_L, BLOCK_D, BLOCK_N) tile ("lo" below is then all of N)."""
    HALF: tl.constexpr = BLOCK_N // 2 if HALVES else BLOCK_N
    mask_d = d < dim_per_group
    n_lo = tl.arange(0, HALF)
    n_hi = n_lo + HALF
    mask_lo, mask_hi = n_lo < N, n_hi < N
    mask_dn_lo = mask_d[:, None] & mask_lo[None, :]
    mask_dn_hi = mask_d[:, None] & mask_hi[None, :]
    A_lo, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, g, d, n_lo, mask_d, mask_dn_lo, s_A_g, s_A_d,
                                     s_A_n, s_D_g, s_D_d, s_bias_g, s_bias_d, HAS_D, HAS_BIAS, BLOCK_D)
    A_hi, _D, _bias = _channel_params(A_ptr, D_ptr, bias_ptr, g, d, n_hi, mask_d, mask_dn_hi, s_A_g, s_A_d,
                                 s_A_n, s_D_g, s_D_d, s_bias_g, s_bias_d, False, False, BLOCK_D)
    A2_lo, A2_hi = A_lo * LOG2E, A_hi * LOG2E
    u_base = u_ptr + b * s_u_b + g * s_u_g + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + g * s_dt_g + d * s_dt_d
    z_base = z_ptr + b * s_z_b + g * s_z_g + d * s_z_d
    o_base = out_ptr + b * s_o_b + g * s_o_g + d * s_o_d
    B_row = B_ptr + b * s_B_b + g * s_B_g
    C_row = C_ptr + b * s_C_b + g * s_C_g
    # State buffers are contiguous: last (batch, groups * dim_per_group, N) and
    # ckpt (batch, groups * dim_per_group, n_chunks, N), float32.
    channel = (b * groups + g) * dim_per_group + d
    ckpt_lo = ckpt_ptr + channel[:, None] * n_chunks * N + n_lo[None, :]
    ckpt_hi = ckpt_ptr + channel[:, None] * n_chunks * N + n_hi[None, :]

    rows = tl.arange(0, BLOCK_L)
    h_lo = tl.zeros([BLOCK_D, HALF], dtype=tl.float32)
    h_hi = tl.zeros([BLOCK_D, HALF], dtype=tl.float32)
    for i in range(n_chunks):
        k = i * BLOCK_L + rows
        valid = k < L
        t = _step_times(k, L, REVERSE)
        mask = valid[:, None] & mask_d[None, :]
        if SAVE_CKPT:
            tl.store(ckpt_lo + i * N, h_lo, mask=mask_dn_lo)
            if HALVES:
                tl.store(ckpt_hi + i * N, h_hi, mask=mask_dn_hi)
        u, _raw, dt = _load_steps(u_base, dt_base, bias, t, mask, s_u_l, s_dt_l, HAS_BIAS, SOFTPLUS)
        dtu = dt * u
        _B, C_lo, _inp, s_lo = _scan_states(dt, dtu, A2_lo, B_row + n_lo * s_B_n, C_row + n_lo * s_C_n, h_lo, t,
                                        valid[:, None] & mask_lo[None, :], s_B_l, s_C_l, BLOCK_L)
        h_lo = _last_row(s_lo, BLOCK_L)
        terms = s_lo * C_lo[:, None, :]
        if HALVES:
            _B, C_hi, _inp, s_hi = _scan_states(dt, dtu, A2_hi, B_row + n_hi * s_B_n, C_row + n_hi * s_C_n,
                                                h_hi, t, valid[:, None] & mask_hi[None, :], s_B_l, s_C_l, BLOCK_L)
            terms += s_hi * C_hi[:, None, :]
            h_hi = _last_row(s_hi, BLOCK_L)
        y = tl.sum(terms, axis=2)                                        # (BL, BD)
        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            zt = tl.load(z_base[None, :] + t[:, None] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            y *= zt * tl.sigmoid(zt)
        o_ptrs = o_base[None, :] + _out_positions(t, g, H2, W2, ATROUS)[:, None] * s_o_l
        if ACCUMULATE:
            y += tl.load(o_ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(last_ptr + channel[:, None] * N + n_lo[None, :], h_lo, mask=mask_dn_lo)
    if HALVES:
        tl.store(last_ptr + channel[:, None] * N + n_hi[None, :], h_hi, mask=mask_dn_hi)


@triton.jit
def selective_scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
        groups, dim_per_group, L, N, batch, length_bucket,
        s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
        s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        SAVE_CKPT: tl.constexpr, BIDIRECTIONAL: tl.constexpr, ATROUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, HALVES: tl.constexpr):
    """Grid (channel blocks, batch * groups), or (channel blocks, batch) when BIDIRECTIONAL. ATROUS: the
    4 groups are EfficientVMamba's skip-sampled directions of a (2 H2, 2 W2) map, and ``out`` is addressed
    by map position. ``batch`` and ``length_bucket`` only key the autotuner's cache."""
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    pid = tl.program_id(1).to(tl.int64)
    n_chunks = tl.cdiv(L, BLOCK_L)
    if BIDIRECTIONAL:
        for direction in tl.static_range(2):
            _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
                      ckpt_ptr, pid, direction, d, groups, dim_per_group, L, N, n_chunks,
                      s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                      s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                      s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
                      HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SAVE_CKPT, direction == 1, direction == 1, False,
                      BLOCK_D, BLOCK_N, BLOCK_L, HALVES)
    else:
        _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
                  ckpt_ptr, pid // groups, pid % groups, d, groups, dim_per_group, L, N, n_chunks,
                  s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                  s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                  s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
                  HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SAVE_CKPT, False, False, ATROUS,
                  BLOCK_D, BLOCK_N, BLOCK_L, HALVES)


@triton.jit
def _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
              ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
              b, g, d, groups, dim_per_group, L, N, n_chunks,
              s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
              s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
              s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
              s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              HAS_DLAST: tl.constexpr, REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, ATROUS: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients of one direction of one (batch b (int64), group g) over channels d; ACCUMULATE adds to
    dz."""
    mask_d = d < dim_per_group
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, g, d, n, mask_d, mask_dn, s_A_g, s_A_d, s_A_n,
                                  s_D_g, s_D_d, s_bias_g, s_bias_d, HAS_D, HAS_BIAS, BLOCK_D)
    A2 = A * LOG2E
    u_base = u_ptr + b * s_u_b + g * s_u_g + d * s_u_d
    dt_base = delta_ptr + b * s_dt_b + g * s_dt_g + d * s_dt_d
    z_base = z_ptr + b * s_z_b + g * s_z_g + d * s_z_d
    do_base = dout_ptr + b * s_do_b + g * s_do_g + d * s_do_d
    dz_base = dz_ptr + b * s_dz_b + g * s_dz_g + d * s_dz_d
    B_base = B_ptr + b * s_B_b + g * s_B_g + n * s_B_n
    C_base = C_ptr + b * s_C_b + g * s_C_g + n * s_C_n
    # Contiguous outputs: du/ddelta (batch, groups, dim_per_group, L), dB/dC (batch, groups, N, L);
    # float32 dA (batch, groups * dim_per_group, N) and dD/dbias (batch, groups * dim_per_group).
    channel = (b * groups + g) * dim_per_group + d
    grad_base = channel * L
    dbc_base = ((b * groups + g) * N + n) * L
    ckpt_base = ckpt_ptr + channel[:, None] * n_chunks * N + n[None, :]

    rows = tl.arange(0, BLOCK_L)
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh at the step after this chunk
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + channel[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for j in range(n_chunks):
        i = n_chunks - 1 - j  # the adjoint runs from the last scan step
        k = i * BLOCK_L + rows
        valid = k < L
        t = _step_times(k, L, REVERSE)
        mask = valid[:, None] & mask_d[None, :]
        mask_nl = valid[:, None] & mask_n[None, :]
        # Recompute the chunk's states from the saved state entering it.
        h0 = tl.load(ckpt_base + i * N, mask=mask_dn, other=0.0)
        u, raw, dt, Bt, Ct, inp, states = _scan_chunk(
            u_base, dt_base, B_base, C_base, A2, bias, h0, t, mask, mask_nl, s_u_l, s_dt_l, s_B_l, s_C_l,
            HAS_BIAS, SOFTPLUS, BLOCK_L)
        dout = tl.load(do_base[None, :] + _out_positions(t, g, H2, W2, ATROUS)[:, None] * s_do_l, mask=mask,
                       other=0.0).to(tl.float32)
        dy = dout
        if HAS_Z:
            zt = tl.load(z_base[None, :] + t[:, None] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zt)
            y = tl.sum(states * Ct[:, None, :], axis=2) + Dv[None, :] * u
            dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
            dz_ptrs = dz_base[None, :] + t[:, None] * s_dz_l
            if ACCUMULATE:
                dz += tl.load(dz_ptrs, mask=mask, other=0.0).to(tl.float32)
            tl.store(dz_ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dout * zt * sig
        dD_acc += tl.sum(dy * u, axis=0)
        # dC_t[n] = sum_d dy_t[d] h_t[d, n]
        tl.atomic_add(dC_ptr + dbc_base[None, :] + t[:, None], tl.sum(dy[:, :, None] * states, axis=1),
                      mask=mask_nl, sem='relaxed')

        # Adjoint g_k = a_{k+1} g_{k+1} + C_k dy_k; a past the last step is 1 (masked dt = 0). Scanned as a
        # forward scan over the flipped rows, entering with the carry from the chunk after this one.
        k_next = k + 1
        mask_next = (k_next < L)[:, None] & mask_d[None, :]
        _, dt_next = _load_delta(dt_base, bias, _step_times(k_next, L, REVERSE), mask_next, s_dt_l, HAS_BIAS,
                                 SOFTPLUS)
        decay_next = tl.flip(tl.exp2(dt_next[:, :, None] * A2[None, :, :]), 0)
        source = tl.flip(dy[:, :, None] * Ct[:, None, :], 0)
        _, adj_flipped = tl.associative_scan((decay_next, _first_row_plus(source, decay_next, carry, BLOCK_L)),
                                             0, _affine_combine)
        carry = _last_row(adj_flipped, BLOCK_L)
        adj = tl.flip(adj_flipped, 0)

        # d(dt u)_t = <g_t, B_t>;  dB_t[n] = sum_d (dt u)_t[d] g_t[d, n]
        ddtu = tl.sum(adj * Bt[:, None, :], axis=2)
        tl.atomic_add(dB_ptr + dbc_base[None, :] + t[:, None], tl.sum((dt * u)[:, :, None] * adj, axis=1),
                      mask=mask_nl, sem='relaxed')
        # d(dt A)_t = g_t a_t h_prev = g_t (h_t - dt_t u_t B_t)
        dlog_decay = adj * (states - inp)
        ddt = ddtu * u + tl.sum(dlog_decay * A[None, :, :], axis=2)
        dA_acc += tl.sum(dlog_decay * dt[:, :, None], axis=0)
        du = ddtu * dt + dy * Dv[None, :]
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=0)
        grad_ptrs = grad_base[None, :] + t[:, None]
        tl.store(du_ptr + grad_ptrs, du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + grad_ptrs, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)

    tl.store(dA_ptr + channel[:, None] * N + n[None, :], dA_acc, mask=mask_dn)
    tl.store(dD_ptr + channel, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + channel, dbias_acc, mask=mask_d)


@triton.jit
def selective_scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr, ckpt_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        groups, dim_per_group, L, N, batch, length_bucket,
        s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
        s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
        s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_DLAST: tl.constexpr, BIDIRECTIONAL: tl.constexpr, ATROUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients; same grid as the forward. dB/dC are accumulated atomically over channel blocks (zeroed by
    the caller, and by the autotuner before each trial), dA/dD/dbias are per batch element (summed by the
    caller)."""
    d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    pid = tl.program_id(1).to(tl.int64)
    n_chunks = tl.cdiv(L, BLOCK_L)
    if BIDIRECTIONAL:
        for direction in tl.static_range(2):
            _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
                      ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                      pid, direction, d, groups, dim_per_group, L, N, n_chunks,
                      s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                      s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                      s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
                      s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
                      HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_DLAST, direction == 1, direction == 1, False,
                      BLOCK_D, BLOCK_N, BLOCK_L)
    else:
        _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
                  ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                  pid // groups, pid % groups, d, groups, dim_per_group, L, N, n_chunks,
                  s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                  s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                  s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
                  s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
                  HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_DLAST, False, False, ATROUS,
                  BLOCK_D, BLOCK_N, BLOCK_L)
