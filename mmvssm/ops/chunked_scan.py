"""``chunked`` backend: a time-blocked, checkpointing selective scan in pure PyTorch.

The recurrence ``h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t``, ``y_t = <C_t, h_t>`` runs in blocks of
``K`` time steps (design of specs/scan.md section 1.8):

* each block's decays and inputs are written into (K, b, G, Dg, N) buffers allocated once per call, so
  nothing of size (L, b, D, N) is ever materialised (large fresh tensors cost page faults on CPU);
* the step loop is one in-place ``addcmul_`` per step on views from ``unbind`` (``[t]`` indexing costs more
  per step), and the block's outputs are one batched matmul against C;
* only the state entering each block is saved; the backward recomputes the block's states from it and runs
  the adjoint (a reverse linear scan) in place.

The method only multiplies by decays in (0, 1] (for A <= 0, delta >= 0), so it cannot overflow, unlike the
cumsum / log-space chunk forms. It works on any device. Compute is float32 (float64 when ``u`` is float64);
half-precision inputs are upcast and the output is cast back to ``u``'s dtype.
"""
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .scan_backend import ScanBackend
from .scan_utils import as_groups, compute_dtype, finish, prepare_delta

# One (K, b, G, Dg, N) block buffer holds about this many elements (~1 MiB in fp32): small enough to stay
# in cache and below glibc's mmap threshold, large enough to amortise per-block overhead (scan.md §3.3).
_BLOCK_ELEMS = 1 << 18
_MIN_BLOCK, _MAX_BLOCK = 4, 128


def block_length(step_elems: int, length: int) -> int:
    """Time steps per block for a per-step state of ``step_elems`` = b*D*N elements."""
    k = round(_BLOCK_ELEMS / max(step_elems, 1))
    return max(1, min(max(_MIN_BLOCK, min(_MAX_BLOCK, k)), length))


def _block_ranges(length: int, k: int) -> List[Tuple[int, int]]:
    return [(t0, min(t0 + k, length)) for t0 in range(0, length, k)]


class _BlockBuffers:
    """Reusable (K, b, G, Dg, N) buffers and their per-step views (built once per call)."""

    def __init__(self, count: int, k: int, state_shape: torch.Size, like: Tensor) -> None:
        self.bufs = [like.new_empty((k, ) + tuple(state_shape)) for _ in range(count)]
        self.steps = [buf.unbind(0) for buf in self.bufs]


def _fill_block(delta: Tensor, dx: Tensor, A: Tensor, B: Tensor, decay: Tensor,
                states: Tensor) -> None:
    """decay <- exp(delta A); states <- (delta u) B, for one block (time-major, grouped layout)."""
    torch.mul(delta.unsqueeze(-1), A, out=decay)
    decay.exp_()
    torch.mul(dx.unsqueeze(-1), B.unsqueeze(-2), out=states)


def _run_block(h_prev: Tensor, decay_steps, state_steps, n: int) -> Tensor:
    """In place: states[t] += decay[t] * states[t-1] (states[-1] = h_prev); returns the last state."""
    for t in range(n):
        state_steps[t].addcmul_(decay_steps[t], h_prev)
        h_prev = state_steps[t]
    return h_prev


class _BlockedScan(torch.autograd.Function):
    """Core scan on time-major, grouped tensors.

    Inputs: delta, dx (= delta * u): (L, b, G, Dg); A: (G, Dg, N); B, C: (L, b, G, N);
    h0: (b, G, Dg, N) or None.  Outputs: y (L, b, G, Dg) and the last state (b, G, Dg, N).
    """

    @staticmethod
    def forward(ctx, delta: Tensor, dx: Tensor, A: Tensor, B: Tensor, C: Tensor,
                h0: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        length, batch, groups, dim_g = delta.shape
        state_shape = torch.Size((batch, groups, dim_g, A.shape[-1]))
        k = block_length(state_shape.numel(), length)
        ranges = _block_ranges(length, k)
        # checkpoints[i] is the state entering block i; checkpoints[-1] is the final state.
        checkpoints = delta.new_empty((len(ranges) + 1, ) + tuple(state_shape))
        if h0 is None:
            checkpoints[0].zero_()
        else:
            checkpoints[0].copy_(h0)
        y = delta.new_empty(length, batch, groups, dim_g)
        if ranges:
            buf = _BlockBuffers(2, k, state_shape, delta)
            (decay, states), (decay_steps, state_steps) = buf.bufs, buf.steps
            c_col = C.unsqueeze(-1)
            for i, (t0, t1) in enumerate(ranges):
                n = t1 - t0
                _fill_block(delta[t0:t1], dx[t0:t1], A, B[t0:t1], decay[:n], states[:n])
                last = _run_block(checkpoints[i], decay_steps, state_steps, n)
                checkpoints[i + 1].copy_(last)
                y[t0:t1] = torch.matmul(states[:n], c_col[t0:t1]).squeeze(-1)
        ctx.block = k
        ctx.save_for_backward(delta, dx, A, B, C, checkpoints)
        ctx.has_h0 = h0 is not None
        ctx.set_materialize_grads(False)
        return y, checkpoints[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Optional[Tensor], dlast: Optional[Tensor]):
        if dy is None and dlast is None:
            return (None, ) * 6
        delta, dx, A, B, C, checkpoints = ctx.saved_tensors
        state_shape = checkpoints.shape[1:]
        # Every block writes its slice of these, so they need no zero fill.
        ddelta, ddx = torch.empty_like(delta), torch.empty_like(dx)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        # carry = dL/dh at the step after the current block, times that step's decay.
        carry = dlast.to(delta.dtype).clone() if dlast is not None else checkpoints.new_zeros(state_shape)
        # dy arrives as a permuted view of a (b, D, L) gradient: make its steps dense.
        dy = dy.to(delta.dtype).contiguous() if dy is not None else torch.zeros_like(delta)
        buf = _BlockBuffers(4, ctx.block, state_shape, delta)
        decay, states, grad, work = buf.bufs
        decay_steps, state_steps, grad_steps, _ = buf.steps
        for i, (t0, t1) in reversed(list(enumerate(_block_ranges(delta.shape[0], ctx.block)))):
            n = t1 - t0
            d_blk, dx_blk, B_blk, C_blk, dy_blk = (delta[t0:t1], dx[t0:t1], B[t0:t1], C[t0:t1],
                                                   dy[t0:t1])
            a, h, g, w = decay[:n], states[:n], grad[:n], work[:n]
            # Recompute the block's decays and states from its checkpoint.
            _fill_block(d_blk, dx_blk, A, B_blk, a, h)
            _run_block(checkpoints[i], decay_steps, state_steps, n)
            # dC_t[g, n] = sum_d dy_t[g, d] h_t[g, d, n]
            dC[t0:t1] = torch.matmul(dy_blk.unsqueeze(-2), h).squeeze(-2)
            # Adjoint: dh_t = dy_t C_t + a_{t+1} dh_{t+1}, run in place in g.
            torch.mul(dy_blk.unsqueeze(-1), C_blk.unsqueeze(-2), out=g)
            g[n - 1].add_(carry)
            for t in range(n - 2, -1, -1):
                grad_steps[t].addcmul_(decay_steps[t + 1], grad_steps[t + 1])
            torch.mul(a[0], g[0], out=carry)
            # d(delta u)_t = <dh_t, B_t>;  dB_t[g, n] = sum_d (delta u)_t[g, d] dh_t[g, d, n]
            ddx[t0:t1] = torch.matmul(g, B_blk.unsqueeze(-1)).squeeze(-1)
            dB[t0:t1] = torch.matmul(dx_blk.unsqueeze(-2), g).squeeze(-2)
            # d(delta A)_t = dh_t * h_{t-1} * a_t; h_{t-1} is the shifted states (reuse w).
            w[0].copy_(checkpoints[i])
            if n > 1:
                w[1:].copy_(h[:n - 1])
            w.mul_(a).mul_(g)
            torch.mul(w, A, out=h)
            ddelta[t0:t1] = h.sum(-1)
            torch.mul(w, d_blk.unsqueeze(-1), out=h)
            dA.add_(h.sum((0, 1)))
        dh0 = carry if ctx.has_h0 else None
        return ddelta, ddx, dA, dB, dC, dh0


def _time_major(t: Tensor, groups: int) -> Tensor:
    """(b, D, L) -> contiguous (L, b, G, D // G), so per-step slices are dense."""
    batch, dim, length = t.shape
    return t.permute(2, 0, 1).reshape(length, batch, groups, dim // groups).contiguous()


def selective_scan_chunked(u: Tensor,
                           delta: Tensor,
                           A: Tensor,
                           B: Tensor,
                           C: Tensor,
                           D: Optional[Tensor] = None,
                           z: Optional[Tensor] = None,
                           delta_bias: Optional[Tensor] = None,
                           delta_softplus: bool = False,
                           return_last_state: bool = False,
                           initial_state: Optional[Tensor] = None
                           ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Time-blocked selective scan; same arguments and results as :func:`selective_scan`.

    Inputs are assumed validated by :func:`selective_scan`. ``initial_state`` (batch, dim, N) optionally
    seeds the recurrence (differentiable), e.g. to continue a sequence split into parts.
    """
    dtype = compute_dtype(u)
    batch, dim, length = u.shape
    B, C = as_groups(B), as_groups(C)
    groups, n_state = B.shape[1], A.shape[1]
    # The scan must never run in half precision: decays near 1 round to 1 (scan.md §3.2).
    with torch.autocast(device_type=u.device.type, enabled=False):
        delta_f = prepare_delta(delta, delta_bias, delta_softplus, dtype)
        dx = delta_f * u.to(dtype)
        h0 = None
        if initial_state is not None:
            h0 = initial_state.to(dtype).reshape(batch, groups, dim // groups, n_state)
        y, last = _BlockedScan.apply(
            _time_major(delta_f, groups), _time_major(dx, groups),
            A.to(dtype).reshape(groups, dim // groups, n_state),
            B.to(dtype).permute(3, 0, 1, 2).contiguous(), C.to(dtype).permute(3, 0, 1, 2).contiguous(),
            h0)
        y = y.reshape(length, batch, dim).permute(1, 2, 0).contiguous()
        out = finish(y, u, D, z, dtype, u.dtype)
    if return_last_state:
        return out, last.reshape(batch, dim, n_state).to(u.dtype)
    return out


# Measured on an H200 (bf16; issue 12's baseline): Vim-T train step 512², b8, chunked vs mamba_ssm.
GPU_FALLBACK_WARNING = (
    'selective_scan: no fast GPU backend (mamba_ssm\'s kernel or Triton) is available, so the pure-PyTorch '
    '`chunked` scan runs on the GPU: it trains Vim 37x slower (H200, Vim-T 512² b8: 2965 ms vs 79 ms a '
    'step). Fix: `pip install triton` (CUDA builds of torch ship it). Set MMVSSM_SCAN_BACKEND=chunked to '
    'choose it knowingly.')


class ChunkedBackend(ScanBackend):
    """Pure PyTorch on any device: ``auto``'s last resort everywhere, announced on GPUs."""
    name = 'chunked'
    auto_rank = {'*': 90}
    slow_on = {'cuda': GPU_FALLBACK_WARNING}

    def scan(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      return_last_state)


CHUNKED = ChunkedBackend()
