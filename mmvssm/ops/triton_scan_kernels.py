"""Triton kernels of the ``triton`` selective-scan backend (imported lazily by :mod:`.triton_backend`).

One program owns ``BLOCK_D`` channels of one (batch, group) pair and their whole (BLOCK_D, N) state, in
float32, for the entire sequence. It walks L in chunks of ``BLOCK_L`` steps; inside a chunk the linear
recurrence ``h_t = a_t h_{t-1} + b_t`` is one ``tl.associative_scan`` over pairs (a, b) of shape
(BLOCK_D, N, BLOCK_L), and the state is carried from chunk to chunk in registers.

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
def selective_scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, last_ptr, ckpt_ptr,
        groups, dim_per_group, L, N, n_chunks,
        s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l,
        s_D, s_z_b, s_z_d, s_z_l, s_bias,
        s_o_b, s_o_d, s_o_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        SAVE_CKPT: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    pid_d = tl.program_id(0)
    pid_bg = tl.program_id(1)
    b = pid_bg // groups
    g = pid_bg % groups
    local_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = local_d < dim_per_group
    d = g * dim_per_group + local_d
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    dim = groups * dim_per_group

    A = tl.load(A_ptr + d[:, None] * s_A_d + n[None, :] * s_A_n,
                mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d * s_D, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d * s_bias, mask=mask_d, other=0.0).to(tl.float32)

    u_row = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_row = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    z_row = z_ptr + b * s_z_b + d[:, None] * s_z_d
    o_row = out_ptr + b * s_o_b + d[:, None] * s_o_d
    B_row = B_ptr + b * s_B_b + g * s_B_g + n[:, None] * s_B_n
    C_row = C_ptr + b * s_C_b + g * s_C_g + n[:, None] * s_C_n
    # (batch, dim, n_chunks, N) contiguous, float32
    ckpt_row = ckpt_ptr + ((b * dim + d[:, None]) * n_chunks) * N + n[None, :]
    mask_dn = mask_d[:, None] & mask_n[None, :]
    is_last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(n_chunks):
        if SAVE_CKPT:
            tl.store(ckpt_row + c * N, h, mask=mask_dn)
        offs = c * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs < L
        mask = mask_d[:, None] & mask_l[None, :]
        u = tl.load(u_row + offs[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        _, dt = _load_delta(dt_row, bias, offs, mask, s_dt_l, HAS_BIAS, SOFTPLUS)
        mask_nl = mask_n[:, None] & mask_l[None, :]
        Bt = tl.load(B_row + offs[None, :] * s_B_l, mask=mask_nl, other=0.0).to(tl.float32)
        Ct = tl.load(C_row + offs[None, :] * s_C_l, mask=mask_nl, other=0.0).to(tl.float32)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])                  # (BD, BN, BL)
        inp = (dt * u)[:, None, :] * Bt[None, :, :]
        acc_a, acc_b = tl.associative_scan((decay, inp), 2, _affine_combine)
        states = _apply_to(acc_a, acc_b, h)
        y = tl.sum(states * Ct[None, :, :], axis=1)                     # (BD, BL)
        # Steps past L have decay 1 and input 0, so the last column is the state at the chunk's end.
        h = tl.sum(tl.where(is_last, states, 0.0), axis=2)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            zt = tl.load(z_row + offs[None, :] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            y *= zt * tl.sigmoid(zt)
        tl.store(o_row + offs[None, :] * s_o_l, y.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(last_ptr + (b * dim + d[:, None]) * N + n[None, :], h, mask=mask_dn)


@triton.jit
def selective_scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        dout_ptr, dlast_ptr, ckpt_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        groups, dim_per_group, L, N, n_chunks,
        s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_A_d, s_A_n,
        s_B_b, s_B_g, s_B_n, s_B_l, s_C_b, s_C_g, s_C_n, s_C_l,
        s_D, s_z_b, s_z_d, s_z_l, s_bias,
        s_do_b, s_do_d, s_do_l,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_DLAST: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    """Gradients. du, ddelta, dz: like u (contiguous); dA (batch, dim, N), dD/dbias (batch, dim): per batch
    element, float32, summed by the caller; dB/dC (batch, groups, N, L) float32, accumulated atomically
    over the group's channel blocks."""
    pid_d = tl.program_id(0)
    pid_bg = tl.program_id(1)
    b = pid_bg // groups
    g = pid_bg % groups
    local_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = local_d < dim_per_group
    d = g * dim_per_group + local_d
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    dim = groups * dim_per_group
    mask_dn = mask_d[:, None] & mask_n[None, :]

    A = tl.load(A_ptr + d[:, None] * s_A_d + n[None, :] * s_A_n, mask=mask_dn, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d * s_D, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d * s_bias, mask=mask_d, other=0.0).to(tl.float32)

    u_row = u_ptr + b * s_u_b + d[:, None] * s_u_d
    dt_row = delta_ptr + b * s_dt_b + d[:, None] * s_dt_d
    z_row = z_ptr + b * s_z_b + d[:, None] * s_z_d
    do_row = dout_ptr + b * s_do_b + d[:, None] * s_do_d
    B_row = B_ptr + b * s_B_b + g * s_B_g + n[:, None] * s_B_n
    C_row = C_ptr + b * s_C_b + g * s_C_g + n[:, None] * s_C_n
    # Outputs are contiguous: (batch, dim, L) and (batch, groups, N, L).
    grad_row = (b * dim + d[:, None]) * L
    dbc_row = ((b * groups + g) * N + n[:, None]) * L
    state_idx = (b * dim + d[:, None]) * N + n[None, :]
    ckpt_row = ckpt_ptr + ((b * dim + d[:, None]) * n_chunks) * N + n[None, :]
    is_first = (tl.arange(0, BLOCK_L) == 0)[None, None, :]

    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # dL/dh at the first step of the next chunk
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + state_idx, mask=mask_dn, other=0.0).to(tl.float32)
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        offs = c * BLOCK_L + tl.arange(0, BLOCK_L)
        mask_l = offs < L
        mask = mask_d[:, None] & mask_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        u = tl.load(u_row + offs[None, :] * s_u_l, mask=mask, other=0.0).to(tl.float32)
        raw, dt = _load_delta(dt_row, bias, offs, mask, s_dt_l, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_row + offs[None, :] * s_B_l, mask=mask_nl, other=0.0).to(tl.float32)
        Ct = tl.load(C_row + offs[None, :] * s_C_l, mask=mask_nl, other=0.0).to(tl.float32)
        dout = tl.load(do_row + offs[None, :] * s_do_l, mask=mask, other=0.0).to(tl.float32)

        # Recompute the chunk's states from the saved state entering it.
        h0 = tl.load(ckpt_row + c * N, mask=mask_dn, other=0.0)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        dtu = dt * u
        inp = dtu[:, None, :] * Bt[None, :, :]
        acc_a, acc_b = tl.associative_scan((decay, inp), 2, _affine_combine)
        states = _apply_to(acc_a, acc_b, h0)

        dy = dout
        if HAS_Z:
            zt = tl.load(z_row + offs[None, :] * s_z_l, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(zt)
            y = tl.sum(states * Ct[None, :, :], axis=1) + Dv[:, None] * u
            dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
            tl.store(dz_ptr + grad_row + offs[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)
            dy = dout * zt * sig
        dD_acc += tl.sum(dy * u, axis=1)
        # dC_t[n] = sum_d dy_t[d] h_t[d, n]
        tl.atomic_add(dC_ptr + dbc_row + offs[None, :], tl.sum(dy[:, None, :] * states, axis=0),
                      mask=mask_nl)

        # Adjoint g_t = a_{t+1} g_{t+1} + C_t dy_t, with a_{t+1} read one step ahead (1 past the end).
        offs_next = offs + 1
        mask_next = mask_d[:, None] & (offs_next < L)[None, :]
        _, dt_next = _load_delta(dt_row, bias, offs_next, mask_next, s_dt_l, HAS_BIAS, SOFTPLUS)
        decay_next = tl.exp(dt_next[:, None, :] * A[:, :, None])
        adj_a, adj_b = tl.associative_scan((decay_next, dy[:, None, :] * Ct[None, :, :]), 2,
                                           _affine_combine, reverse=True)
        adj = _apply_to(adj_a, adj_b, carry)
        carry = tl.sum(tl.where(is_first, adj, 0.0), axis=2)

        # d(dt u)_t = <g_t, B_t>;  dB_t[n] = sum_d (dt u)_t[d] g_t[d, n]
        ddtu = tl.sum(adj * Bt[None, :, :], axis=1)
        tl.atomic_add(dB_ptr + dbc_row + offs[None, :], tl.sum(dtu[:, None, :] * adj, axis=0),
                      mask=mask_nl)
        # d(dt A)_t = g_t a_t h_{t-1} = g_t (h_t - dt_t u_t B_t)
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

    tl.store(dA_ptr + state_idx, dA_acc, mask=mask_dn)
    tl.store(dD_ptr + b * dim + d, dD_acc, mask=mask_d)
    tl.store(dbias_ptr + b * dim + d, dbias_acc, mask=mask_d)
