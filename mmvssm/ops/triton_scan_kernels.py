"""Triton kernels of the ``triton`` selective-scan backend (imported lazily by :mod:`.triton_backend`).

One program owns ``BLOCK_D`` channels of one (batch, group) pair and their whole (BLOCK_D, N) state, in
float32, for the entire sequence. It walks L in chunks of ``BLOCK_L`` steps; inside a chunk the linear
recurrence ``h_t = a_t h_{t-1} + b_t`` is one ``tl.associative_scan`` over pairs (a, b) of shape
(BLOCK_D, N, BLOCK_L), and the state is carried from chunk to chunk in registers.

A scan can also run backwards in time (``REVERSE``: h_t = a_t h_{t+1} + b_t), reading the sequence in its
stored order: the chunks are walked from the end and the chunk scan is reversed. That is how Vim's second
direction runs without flipping anything. In ``BIDIRECTIONAL`` mode a program runs group 0 forwards and
group 1 backwards over the same channels and sums both gated outputs into one (batch, dim, L) result.

In ``ATROUS`` mode the 4 groups are EfficientVMamba's skip-sampled directions, and each output token is
written at its position in the (H, W, channels) map (the gradient read from there), so nothing scatters it
back afterwards.

Every per-channel tensor is addressed as (batch, group, channel, L) through four strides (a group stride
of 0 shares one tensor, e.g. Vim's gate z, between both directions).

The backward is the reverse-time (adjoint) recurrence ``g_t = a_{t+1} g_{t+1} + C_t dy_t`` (g = dL/dh_t),
run chunk by chunk from the end: the forward saved only the state entering each chunk (batch, dim,
n_chunks, N), from which the chunk's states are recomputed, so nothing of size (batch, dim, L, N) is stored.
Identities used so that no shifted state h_{t-1} is needed: ``a_t h_{t-1} = h_t - delta_t u_t B_t``.

All tensors are addressed through their strides, so non-contiguous inputs (e.g. B/C as transposed views
of a projection) are read in place, in whatever float dtype they come in.
"""
import triton
import triton.language as tl


@triton.jit
def _affine_combine(a_prev, b_prev, a_cur, b_cur):
    # Composition of h -> a h + b maps; the same rule serves the forward and the reversed scan.
    return a_prev * a_cur, a_cur * b_prev + b_cur


@triton.jit
def _apply_to(acc_a, acc_b, h0):
    """States from a scan's (decay product, input sum) and the entering state h0 (BLOCK_D, BLOCK_N).

    A zero h0 contributes nothing even where the decay product overflowed (decays > 1 are legal inputs),
    which a plain ``acc_a * h0`` would turn into NaN."""
    h0 = h0[:, :, None]
    return acc_b + tl.where(h0 == 0.0, 0.0, acc_a * h0)


@triton.jit
def _softplus(x):
    # Same threshold as torch.nn.functional.softplus (beta=1, threshold=20). log1p(e) written as
    # log(1 + e) * e / ((1 + e) - 1) (Goldberg): exact to rounding also where e << 1 and 1 + e rounds.
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _load_delta(delta_row, bias, offs, mask, s_dt_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """(BLOCK_D, BLOCK_L) raw delta, and the discretisation step (zero outside the sequence)."""
    raw = tl.load(delta_row + offs[None, :] * s_dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return raw, tl.where(mask, dt, 0.0)


@triton.jit
def _chunk_offsets(i, n_chunks, BLOCK_L: tl.constexpr, BACKWARDS: tl.constexpr):
    """Positions of the i-th chunk visited, walking from the start or (BACKWARDS) from the end."""
    if BACKWARDS:
        c = n_chunks - 1 - i
    else:
        c = i
    return c, c * BLOCK_L + tl.arange(0, BLOCK_L)


@triton.jit
def _edge(states, AT_START: tl.constexpr, BLOCK_L: tl.constexpr):
    """The (BLOCK_D, BLOCK_N) slice of a chunk tile at its first (AT_START) or last column."""
    if AT_START:
        sel = tl.arange(0, BLOCK_L) == 0
    else:
        sel = tl.arange(0, BLOCK_L) == BLOCK_L - 1
    return tl.sum(tl.where(sel[None, None, :], states, 0.0), axis=2)


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, g, local_d, n, mask_d, mask_dn, s_A_g, s_A_d, s_A_n, s_D_g,
                    s_D_d, s_bias_g, s_bias_d, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    """A (BLOCK_D, BLOCK_N), D and delta_bias (BLOCK_D,) of one group's channels, float32 (zeros when
    absent)."""
    A = tl.load(A_ptr + g * s_A_g + local_d[:, None] * s_A_d + n[None, :] * s_A_n, mask=mask_dn,
                other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + g * s_D_g + local_d * s_D_d, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + g * s_bias_g + local_d * s_bias_d, mask=mask_d, other=0.0).to(tl.float32)
    return A, Dv, bias


@triton.jit
def _out_positions(offs, g, H2, W2, ATROUS: tl.constexpr):
    """Where token ``offs`` of direction g sits along the output's L axis: itself, or (ATROUS) its flat
    position in the (2 H2, 2 W2) map EfficientVMamba skip-samples: rows of parity g % 2, columns of parity
    g // 2, the odd directions read column-major."""
    if ATROUS:
        col_major = (g % 2) == 1
        i = tl.where(col_major, offs % H2, offs // W2)
        j = tl.where(col_major, offs // H2, offs % W2)
        return (2 * i + g % 2) * (2 * W2) + 2 * j + g // 2
    else:
        return offs


@triton.jit
def _chunk_states(u_row, dt_row, B_row, C_row, A, bias, h0, offs, mask_d, mask_n, L, s_u_l, s_dt_l, s_B_l,
                  s_C_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, REVERSE: tl.constexpr):
    """Load one chunk and scan it from the state ``h0`` entering it.

    Returns the (BLOCK_D, BLOCK_L) and (BLOCK_N, BLOCK_L) masks, u, raw delta and step dt (BLOCK_D,
    BLOCK_L), C and B (BLOCK_N, BLOCK_L), and the inputs dt u B and states h, (BLOCK_D, BLOCK_N, BLOCK_L).
    """
    mask_l = offs < L
    mask = mask_d[:, None] & mask_l[None, :]
    mask_nl = mask_n[:, None] & mask_l[None, :]
    u = tl.load(u_row + offs[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
    raw, dt = _load_delta(dt_row, bias, offs, mask, s_dt_l, HAS_BIAS, SOFTPLUS)
    Bt = tl.load(B_row + offs[None, :] * s_B_l, mask=mask_nl, other=0.0).to(tl.float32)
    Ct = tl.load(C_row + offs[None, :] * s_C_l, mask=mask_nl, other=0.0).to(tl.float32)
    decay = tl.exp(dt[:, None, :] * A[:, :, None])
    inp = (dt * u)[:, None, :] * Bt[None, :, :]
    acc_a, acc_b = tl.associative_scan((decay, inp), 2, _affine_combine, reverse=REVERSE)
    return mask, mask_nl, u, raw, dt, Ct, Bt, inp, _apply_to(acc_a, acc_b, h0)


@triton.jit
def _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
              b, g, local_d, groups, dim_per_group, L, N, n_chunks,
              s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
              s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
              s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              SAVE_CKPT: tl.constexpr, REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, ATROUS: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """One direction of one (batch, group) over BLOCK_D channels; ACCUMULATE adds to ``out``, ATROUS
    writes each token at its map position."""
    mask_d = local_d < dim_per_group
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, g, local_d, n, mask_d, mask_dn, s_A_g, s_A_d,
                                  s_A_n, s_D_g, s_D_d, s_bias_g, s_bias_d, HAS_D, HAS_BIAS, BLOCK_D)
    u_row = u_ptr + b * s_u_b + g * s_u_g + local_d[:, None] * s_u_d
    dt_row = delta_ptr + b * s_dt_b + g * s_dt_g + local_d[:, None] * s_dt_d
    z_row = z_ptr + b * s_z_b + g * s_z_g + local_d[:, None] * s_z_d
    o_row = out_ptr + b * s_o_b + g * s_o_g + local_d[:, None] * s_o_d
    B_row = B_ptr + b * s_B_b + g * s_B_g + n[:, None] * s_B_n
    C_row = C_ptr + b * s_C_b + g * s_C_g + n[:, None] * s_C_n
    # State buffers are contiguous: last (batch, groups * dim_per_group, N) and
    # ckpt (batch, groups * dim_per_group, n_chunks, N), float32.
    channel = (b * groups + g) * dim_per_group + local_d[:, None]
    ckpt_row = ckpt_ptr + channel * n_chunks * N + n[None, :]

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for i in range(n_chunks):
        c, offs = _chunk_offsets(i, n_chunks, BLOCK_L, REVERSE)
        if SAVE_CKPT:
            tl.store(ckpt_row + c * N, h, mask=mask_dn)
        mask, mask_nl, u, _, dt, Ct, Bt, inp, states = _chunk_states(
            u_row, dt_row, B_row, C_row, A, bias, h, offs, mask_d, mask_n, L, s_u_l, s_dt_l, s_B_l, s_C_l,
            HAS_BIAS, SOFTPLUS, REVERSE)
        y = tl.sum(states * Ct[None, :, :], axis=1)                     # (BD, BL)
        # Steps past L have decay 1 and input 0, so the edge column is the state leaving the chunk.
        h = _edge(states, REVERSE, BLOCK_L)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_row + offs[None, :] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            y *= zt * tl.sigmoid(zt)
        o_ptrs = o_row + _out_positions(offs, g, H2, W2, ATROUS)[None, :] * s_o_l
        if ACCUMULATE:
            y += tl.load(o_ptrs, mask=mask, other=0.0).to(tl.float32)
        tl.store(o_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(last_ptr + channel * N + n[None, :], h, mask=mask_dn)


@triton.jit
def selective_scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
        groups, dim_per_group, L, N, n_chunks,
        s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
        s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        SAVE_CKPT: tl.constexpr, BIDIRECTIONAL: tl.constexpr, ATROUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Grid (channel blocks, batch * groups), or (channel blocks, batch) when BIDIRECTIONAL. ATROUS: the
    4 groups are EfficientVMamba's skip-sampled directions of a (2 H2, 2 W2) map, and ``out`` is addressed
    by map position."""
    local_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    pid = tl.program_id(1)
    if BIDIRECTIONAL:
        for direction in tl.static_range(2):
            _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
                      ckpt_ptr, pid, direction, local_d, groups, dim_per_group, L, N, n_chunks,
                      s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                      s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                      s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
                      HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SAVE_CKPT, direction == 1, direction == 1, False,
                      BLOCK_D, BLOCK_N, BLOCK_L)
    else:
        _fwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
                  ckpt_ptr, pid // groups, pid % groups, local_d, groups, dim_per_group, L, N, n_chunks,
                  s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                  s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                  s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_o_b, s_o_g, s_o_d, s_o_l, H2, W2,
                  HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SAVE_CKPT, False, False, ATROUS,
                  BLOCK_D, BLOCK_N, BLOCK_L)


@triton.jit
def _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
              ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
              b, g, local_d, groups, dim_per_group, L, N, n_chunks,
              s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
              s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
              s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
              s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              HAS_DLAST: tl.constexpr, REVERSE: tl.constexpr, ACCUMULATE: tl.constexpr, ATROUS: tl.constexpr,
              BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients of one direction of one (batch, group) over BLOCK_D channels; ACCUMULATE adds to dz."""
    mask_d = local_d < dim_per_group
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, g, local_d, n, mask_d, mask_dn, s_A_g, s_A_d,
                                  s_A_n, s_D_g, s_D_d, s_bias_g, s_bias_d, HAS_D, HAS_BIAS, BLOCK_D)
    u_row = u_ptr + b * s_u_b + g * s_u_g + local_d[:, None] * s_u_d
    dt_row = delta_ptr + b * s_dt_b + g * s_dt_g + local_d[:, None] * s_dt_d
    z_row = z_ptr + b * s_z_b + g * s_z_g + local_d[:, None] * s_z_d
    do_row = dout_ptr + b * s_do_b + g * s_do_g + local_d[:, None] * s_do_d
    dz_row = dz_ptr + b * s_dz_b + g * s_dz_g + local_d[:, None] * s_dz_d
    B_row = B_ptr + b * s_B_b + g * s_B_g + n[:, None] * s_B_n
    C_row = C_ptr + b * s_C_b + g * s_C_g + n[:, None] * s_C_n
    # Contiguous outputs: du/ddelta (batch, groups, dim_per_group, L), dB/dC (batch, groups, N, L);
    # float32 dA (batch, groups * dim_per_group, N) and dD/dbias (batch, groups * dim_per_group).
    channel = (b * groups + g) * dim_per_group + local_d[:, None]
    grad_row = channel * L
    dbc_row = ((b * groups + g) * N + n[:, None]) * L
    ckpt_row = ckpt_ptr + channel * n_chunks * N + n[None, :]

    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh at the step after this chunk
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + channel * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    # The adjoint runs against the scan's direction of time.
    for i in range(n_chunks):
        c, offs = _chunk_offsets(i, n_chunks, BLOCK_L, not REVERSE)
        # Recompute the chunk's states from the saved state entering it.
        h0 = tl.load(ckpt_row + c * N, mask=mask_dn, other=0.0)
        mask, mask_nl, u, raw, dt, Ct, Bt, inp, states = _chunk_states(
            u_row, dt_row, B_row, C_row, A, bias, h0, offs, mask_d, mask_n, L, s_u_l, s_dt_l, s_B_l, s_C_l,
            HAS_BIAS, SOFTPLUS, REVERSE)
        dtu = dt * u
        dout = tl.load(do_row + _out_positions(offs, g, H2, W2, ATROUS)[None, :] * s_do_l, mask=mask,
                       other=0.0).to(tl.float32)

        dy = dout
        if HAS_Z:
            zt = tl.load(z_row + offs[None, :] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zt)
            y = tl.sum(states * Ct[None, :, :], axis=1) + Dv[:, None] * u
            dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
            if ACCUMULATE:
                dz += tl.load(dz_row + offs[None, :] * s_dz_l, mask=mask, other=0.0).to(tl.float32)
            tl.store(dz_row + offs[None, :] * s_dz_l, dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dout * zt * sig
        dD_acc += tl.sum(dy * u, axis=1)
        # dC_t[n] = sum_d dy_t[d] h_t[d, n]
        tl.atomic_add(dC_ptr + dbc_row + offs[None, :], tl.sum(dy[:, None, :] * states, axis=0),
                      mask=mask_nl)

        # Adjoint g_t = a_next g_next + C_t dy_t, where "next" is the step the scan visits after t
        # (t + 1, or t - 1 in REVERSE); a_next is 1 past the sequence's end.
        if REVERSE:
            offs_next = offs - 1
        else:
            offs_next = offs + 1
        mask_next = mask_d[:, None] & ((offs_next >= 0) & (offs_next < L))[None, :]
        _, dt_next = _load_delta(dt_row, bias, offs_next, mask_next, s_dt_l, HAS_BIAS, SOFTPLUS)
        decay_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        adj_a, adj_b = tl.associative_scan((decay_next, dy[:, None, :] * Ct[None, :, :]), 2,
                                           _affine_combine, reverse=not REVERSE)
        adj = _apply_to(adj_a, adj_b, carry)
        carry = _edge(adj, not REVERSE, BLOCK_L)

        # d(dt u)_t = <g_t, B_t>;  dB_t[n] = sum_d (dt u)_t[d] g_t[d, n]
        ddtu = tl.sum(adj * Bt[None, :, :], axis=1)
        tl.atomic_add(dB_ptr + dbc_row + offs[None, :], tl.sum(dtu[:, None, :] * adj, axis=0),
                      mask=mask_nl)
        # d(dt A)_t = g_t a_t h_prev = g_t (h_t - dt_t u_t B_t)
        dlog_decay = adj * (states - inp)
        ddt = ddtu * u + tl.sum(dlog_decay * A[:, :, None], axis=1)
        dA_acc += tl.sum(dlog_decay * dt[:, None, :], axis=2)
        du = ddtu * dt + dy * Dv[:, None]
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(du_ptr + grad_row + offs[None, :], du.to(du_ptr.dtype.element_ty), mask=mask)
        tl.store(ddelta_ptr + grad_row + offs[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=mask)

    tl.store(dA_ptr + channel * N + n[None, :], dA_acc, mask=mask_dn)
    flat = (b * groups + g) * dim_per_group + local_d
    tl.store(dD_ptr + flat, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + flat, dbias_acc, mask=mask_d)


@triton.jit
def selective_scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr, ckpt_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        groups, dim_per_group, L, N, n_chunks,
        s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
        s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
        s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_DLAST: tl.constexpr, BIDIRECTIONAL: tl.constexpr, ATROUS: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients; same grid as the forward. dB/dC are accumulated atomically over channel blocks, dA/dD/dbias
    are per batch element (summed by the caller)."""
    local_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    pid = tl.program_id(1)
    if BIDIRECTIONAL:
        for direction in tl.static_range(2):
            _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
                      ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                      pid, direction, local_d, groups, dim_per_group, L, N, n_chunks,
                      s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                      s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                      s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
                      s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
                      HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_DLAST, direction == 1, direction == 1, False,
                      BLOCK_D, BLOCK_N, BLOCK_L)
    else:
        _bwd_pass(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, dlast_ptr,
                  ckpt_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                  pid // groups, pid % groups, local_d, groups, dim_per_group, L, N, n_chunks,
                  s_u_b, s_u_g, s_u_d, s_u_l, s_dt_b, s_dt_g, s_dt_d, s_dt_l, s_A_g, s_A_d, s_A_n,
                  s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l, s_D_g, s_D_d,
                  s_z_b, s_z_g, s_z_d, s_z_l, s_bias_g, s_bias_d, s_do_b, s_do_g, s_do_d, s_do_l,
                  s_dz_b, s_dz_g, s_dz_d, s_dz_l, H2, W2,
                  HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, HAS_DLAST, False, False, ATROUS,
                  BLOCK_D, BLOCK_N, BLOCK_L)
