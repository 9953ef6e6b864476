"""The scan ops as real torch operators (``torch.library.custom_op``, namespace ``mmvssm``).

``torch.ops.mmvssm.selective_scan``, ``bidirectional_scan``, ``atrous_scan`` and ``bidirectional_conv1d_silu``
run the backend their ``backend`` argument resolves to *where they run* (``'auto'`` stays ``'auto'`` in a
captured graph). Each has a fake (meta) kernel, so ``torch.export`` and ``torch.compile(fullgraph=True)``
see an opaque op of known shape instead of tracing into a C++/Triton kernel, and an autograd formula
(``register_autograd``) whose backward is the op ``mmvssm::scan_backward``: it recomputes the forward with
the backend's own differentiable implementation and differentiates it (the scan is recomputed once in a
captured backward, as activation checkpointing would; eager calls never come here, see
:func:`capturing`).

The fused ops have fixed semantics whatever backend runs them: Vim's second direction in the stored order
(scanned backwards in time, the anti-causal conv), so a program captured on a GPU (Triton, fused) still
runs right with a backend that composes them from flips.

ONNX has no scan operator: :func:`decompositions` maps each op to plain torch ops (the block-parallel
"segment sum" form of :mod:`.segsum_scan`, L / 16 block steps), for ``ExportedProgram.run_decompositions``;
exporting the opaque ops to ONNX otherwise fails (both exporters name the unsupported ``mmvssm`` op), never
silently wrong.
"""
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import backends
from .segsum_scan import SEGSUM
from .scan_backend import ScanBackend

NAMESPACE = 'mmvssm'


def capturing() -> bool:
    """True while torch.compile / torch.export / torch.jit.trace capture a graph: the public scan
    functions then call the ops of this module; in eager mode they call the backend directly (its own
    autograd, no recompute)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


# --------------------------------------------------------------------------------------------------
# What each op computes, given its backend object: (tensor inputs, delta_softplus, sizes) -> outputs.
# Used by the ops' kernels (no grad), by their backward (recompute with grad), and with SEGSUM as the ONNX
# decomposition.
# --------------------------------------------------------------------------------------------------
def _scan(impl: ScanBackend, t: Sequence[Optional[Tensor]], softplus: bool, sizes: Sequence[int]):
    u, delta, A, B, C, D, z, delta_bias = t
    if sizes[0]:  # return_last_state
        return tuple(impl.scan(u, delta, A, B, C, D, z, delta_bias, softplus, True))
    return impl.scan(u, delta, A, B, C, D, z, delta_bias, softplus, False), u.new_empty(0)


def _bidirectional(impl: ScanBackend, t: Sequence[Optional[Tensor]], softplus: bool, sizes: Sequence[int]):
    return (impl.bidirectional_scan(*t, softplus), )


def _atrous(impl: ScanBackend, t: Sequence[Optional[Tensor]], softplus: bool, sizes: Sequence[int]):
    return (impl.atrous_scan(*t, softplus, *sizes), )


def _conv(impl: ScanBackend, t: Sequence[Optional[Tensor]], softplus: bool, sizes: Sequence[int]):
    return (impl.bidirectional_conv1d_silu(*t), )


_COMPUTE: Dict[str, Callable] = {'selective_scan': _scan, 'bidirectional_scan': _bidirectional,
                                 'atrous_scan': _atrous, 'bidirectional_conv1d_silu': _conv}


def _run(op: str, tensors: Sequence[Optional[Tensor]], softplus: bool, sizes: Sequence[int],
         backend: str) -> Tuple[Tensor, ...]:
    """The op's outputs from the backend ``backend`` resolves to, without autograd, as fresh dense tensors
    (what the fake kernels promise)."""
    impl = backends.resolve(backend, tensors[0], tensors[2] if op != 'bidirectional_conv1d_silu' else
                            tensors[0].new_empty(1, 1))
    with torch.no_grad():
        return tuple(t.contiguous() for t in _COMPUTE[op](impl, tensors, softplus, sizes))


# --------------------------------------------------------------------------------------------------
# The ops
# --------------------------------------------------------------------------------------------------
@torch.library.custom_op(f'{NAMESPACE}::selective_scan', mutates_args=())
def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                      z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                      return_last_state: bool, backend: str) -> Tuple[Tensor, Tensor]:
    """:func:`mmvssm.ops.selective_scan`; returns (y, last state), the last state empty (0,) unless
    ``return_last_state`` (an op has a fixed number of outputs)."""
    out, last = _run('selective_scan', (u, delta, A, B, C, D, z, delta_bias), delta_softplus,
                     (int(return_last_state), ), backend)
    return out, last


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend):
    last = (u.shape[0], u.shape[1], A.shape[1]) if return_last_state else (0, )
    return u.new_empty(u.shape), u.new_empty(last)


@torch.library.custom_op(f'{NAMESPACE}::bidirectional_scan', mutates_args=())
def bidirectional_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                          z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
                          backend: str) -> Tensor:
    """Vim's two directions, both in the stored order (direction 1 scanned backwards in time), summed and
    gated by z: (batch, 2, dim, L) -> (batch, dim, L)."""
    return _run('bidirectional_scan', (u, delta, A, B, C, D, z, delta_bias), delta_softplus, (), backend)[0]


@bidirectional_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
    return u.new_empty(u.shape[0], u.shape[2], u.shape[3])


@torch.library.custom_op(f'{NAMESPACE}::atrous_scan', mutates_args=())
def atrous_scan_op(xs: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                   delta_bias: Optional[Tensor], delta_softplus: bool, height: int, width: int,
                   backend: str) -> Tensor:
    """EfficientVMamba's four directions: (batch, 4, dim, L') -> (batch, height, width, dim), float32
    (float64 for float64 inputs)."""
    return _run('atrous_scan', (xs, delta, A, B, C, D, delta_bias), delta_softplus, (height, width),
                backend)[0]


@atrous_scan_op.register_fake
def _(xs, delta, A, B, C, D, delta_bias, delta_softplus, height, width, backend):
    return xs.new_empty((xs.shape[0], height, width, xs.shape[2]),
                        dtype=torch.promote_types(xs.dtype, torch.float32))


@torch.library.custom_op(f'{NAMESPACE}::bidirectional_conv1d_silu', mutates_args=())
def bidirectional_conv1d_silu_op(u: Tensor, weight0: Tensor, bias0: Optional[Tensor], weight1: Tensor,
                                 bias1: Optional[Tensor], backend: str) -> Tensor:
    """Vim's conv1d + SiLU, both directions in the stored order: (batch, dim, L) -> (batch, 2, dim, L)."""
    return _run('bidirectional_conv1d_silu', (u, weight0, bias0, weight1, bias1), False, (), backend)[0]


@bidirectional_conv1d_silu_op.register_fake
def _(u, weight0, bias0, weight1, bias1, backend):
    return u.new_empty(u.shape[0], 2, u.shape[1], u.shape[2])


# --------------------------------------------------------------------------------------------------
# Autograd: one backward op for all four
# --------------------------------------------------------------------------------------------------
@torch.library.custom_op(f'{NAMESPACE}::scan_backward', mutates_args=())
def scan_backward_op(op: str, inputs: List[Optional[Tensor]], grads: List[Optional[Tensor]],
                     delta_softplus: bool, sizes: List[int], backend: str) -> List[Tensor]:
    """Gradients of op ``op`` for each present input (in order), by recomputing the forward with the
    backend's differentiable implementation."""
    impl = backends.resolve(backend, inputs[0], inputs[2] if op != 'bidirectional_conv1d_silu' else
                            inputs[0].new_empty(1, 1))
    leaves = [None if t is None else t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    wanted = [t for t in leaves if t is not None]
    differentiable = [t for t in wanted if t.requires_grad]
    with _autograd_inside_op():
        outs = _COMPUTE[op](impl, leaves, delta_softplus, sizes)
        # An output whose gradient is all zero adds nothing; skipping it spares a backend that cannot
        # differentiate its last state (cuda) an error when only the output was used.
        pairs = [(o, g) for o, g in zip(outs, grads)
                 if g is not None and o.requires_grad and o.numel() and (o is outs[0] or bool(g.any()))]
        got = torch.autograd.grad([o for o, _ in pairs], differentiable, [g for _, g in pairs],
                                  allow_unused=True) if pairs and differentiable else [None] * len(differentiable)
    by_input = {id(t): g for t, g in zip(differentiable, got)}
    return [torch.zeros_like(t) if by_input.get(id(t)) is None else by_input[id(t)].contiguous() for t in wanted]


@contextmanager
def _autograd_inside_op() -> Iterator[None]:
    """Grad mode with the autograd dispatch keys back on: an op's kernel runs below autograd (the
    dispatcher excludes those keys), and the recompute in :func:`scan_backward_op` needs them. Private
    torch API (``_ForceDispatchKeyGuard``); opcheck in tests/test_export.py fails if it stops working."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in ('AutogradFunctionality', 'AutogradOther', 'AutogradNestedTensor', 'ADInplaceOrView'):
        exclude = exclude.remove(getattr(torch._C.DispatchKey, key))
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), \
            torch.enable_grad():
        yield


@scan_backward_op.register_fake
def _(op, inputs, grads, delta_softplus, sizes, backend):
    return [torch.empty_like(t) for t in inputs if t is not None]


# Each op: (its OpOverloadPacket, the positions of its tensor inputs, of delta_softplus, of its sizes).
_SIGNATURES = {
    'selective_scan': (selective_scan_op, 8, 8, (9, ), 10),
    'bidirectional_scan': (bidirectional_scan_op, 8, 8, (), 9),
    'atrous_scan': (atrous_scan_op, 7, 7, (8, 9), 10),
    'bidirectional_conv1d_silu': (bidirectional_conv1d_silu_op, 5, None, (), 5),
}


def _register_autograd(op_name: str) -> None:
    op, n_tensors, softplus_at, size_at, backend_at = _SIGNATURES[op_name]

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.options = (False if softplus_at is None else bool(inputs[softplus_at]),
                       [int(inputs[i]) for i in size_at], inputs[backend_at])

    def backward(ctx, *grads):
        saved = list(ctx.saved_tensors)
        softplus, sizes, backend = ctx.options
        got = iter(torch.ops.mmvssm.scan_backward(op_name, saved, list(grads), softplus, sizes, backend))
        n_args = len(op._opoverload._schema.arguments)
        return tuple(next(got) if i < n_tensors and saved[i] is not None else None for i in range(n_args))

    op.register_autograd(backward, setup_context=setup_context)


for _name in _SIGNATURES:
    _register_autograd(_name)


# --------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------
def decompositions() -> Dict[torch._ops.OpOverload, Callable]:
    """Each ``mmvssm`` op as plain torch ops (:data:`~mmvssm.ops.segsum_scan.SEGSUM`: blocks of 16 steps in
    a few large ops each), for ``ExportedProgram.run_decompositions`` before an ONNX export (ONNX has no scan
    operator)."""

    def decomposition(op_name: str) -> Callable:
        op, n_tensors, softplus_at, size_at, _ = _SIGNATURES[op_name]

        def run(*args):
            softplus = False if softplus_at is None else bool(args[softplus_at])
            outs = _COMPUTE[op_name](SEGSUM, args[:n_tensors], softplus, [int(args[i]) for i in size_at])
            return outs if op_name == 'selective_scan' else outs[0]

        return run

    return {_SIGNATURES[name][0]._opoverload: decomposition(name) for name in _SIGNATURES}
