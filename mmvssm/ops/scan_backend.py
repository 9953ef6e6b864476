"""What a selective-scan backend is: :class:`ScanBackend`, one object per backend.

A backend says what it is (``name``), where it runs (``device_types``, :meth:`is_available`,
:meth:`unsupported_reason`), when ``auto`` picks it (``auto_rank``), what it can do (``layouts``,
``last_state_grad``) and how it scans (:meth:`scan`, differentiable through the backend's own backward).
The fused layouts Vim and EfficientVMamba use (:meth:`bidirectional_conv1d_silu`, :meth:`bidirectional_scan`,
:meth:`atrous_scan`) default to the unfused composition over :meth:`scan`; a backend that lists
:data:`BIDIRECTIONAL` / :data:`ATROUS` in ``layouts`` overrides them with fused kernels.

Adding a backend: subclass :class:`ScanBackend` in its own module, make one instance, and add it to the
tuple in :mod:`mmvssm.ops.backends` (the one registration line). Nothing here imports the dispatcher.
"""
from typing import ClassVar, Dict, FrozenSet, Optional, Tuple, Union

import torch
from torch import Tensor

from .scan_utils import (atrous_by_directions, bidirectional_in_scan_order, conv1d_silu_in_scan_order,
                         fold_directions, reverse_second)

ScanOutput = Union[Tensor, Tuple[Tensor, Tensor]]

#: Each direction scanned in its own order (the second direction of Vim reversed by the caller).
PLAIN = 'plain'
#: Vim's second direction read backwards in place (conv and scan), both outputs summed by the kernel.
BIDIRECTIONAL = 'bidirectional'
#: EfficientVMamba's four skip-sampled directions written straight to their map positions.
ATROUS = 'atrous'


class ScanBackend:
    """One selective-scan backend. Subclasses set the class attributes and implement :meth:`scan`."""

    #: The name users pass as ``backend=`` / ``$MMVSSM_SCAN_BACKEND``.
    name: ClassVar[str] = ''
    #: Device types whose tensors it runs; None: any device.
    device_types: ClassVar[Optional[FrozenSet[str]]] = None
    #: Position in ``auto``'s order for each device type (lower first); absent: ``auto`` never picks it.
    #: The key ``'*'`` stands for any device type not listed.
    auto_rank: ClassVar[Dict[str, int]] = {}
    #: Fused layouts it implements beyond :data:`PLAIN` (see :meth:`bidirectional_scan`).
    layouts: ClassVar[FrozenSet[str]] = frozenset({PLAIN})
    #: Whether a gradient can flow back through the returned last state.
    last_state_grad: ClassVar[bool] = True
    #: How to make it available, shown when it was requested but cannot run.
    missing_hint: ClassVar[str] = ''
    #: Device type -> the warning given once when ``auto`` falls back to it there (it is much slower).
    slow_on: ClassVar[Dict[str, str]] = {}

    def is_available(self, device: Optional[torch.device] = None) -> bool:
        """True when it can run tensors on ``device`` (on some device when None)."""
        return self.device_types is None or device is None or device.type in self.device_types

    def unavailable_reason(self, device: torch.device) -> Optional[str]:
        """Why it cannot run tensors on ``device`` and how to fix that; None when it can."""
        if self.is_available(device):
            return None
        return f'not available for {device.type} tensors: {self.missing_hint}'

    def unsupported_reason(self, u: Tensor, A: Tensor) -> Optional[str]:
        """Why it cannot run these (available-device) inputs, e.g. N too large; None when it can."""
        return None

    def scan(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool,
             return_last_state: bool) -> ScanOutput:
        """:func:`mmvssm.ops.selective_scan` on validated inputs, differentiable."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------
    # Fused layouts. These defaults compose them from :meth:`scan` (what the custom ops run when the
    # backend of the call has no fused kernel); a backend listing the layout overrides them.
    # ----------------------------------------------------------------------------------------------
    def reads_backward_in_place(self) -> bool:
        """Whether Vim's second direction stays in the stored order between conv and scan (the model then
        calls the two fused methods below; otherwise it keeps direction 1 reversed, in scan order)."""
        return BIDIRECTIONAL in self.layouts

    def multi_direction_scan(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                             D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                             delta_softplus: bool) -> Tensor:
        """K directions (batch, K, dim, L) in one :meth:`scan`, folded into channels (B/C into groups)."""
        fu, fdelta, fA, fD, fz, fbias = fold_directions(u, delta, A, D, z, delta_bias)
        return self.scan(fu, fdelta, fA, B, C, fD, fz, fbias, delta_softplus, False).reshape(u.shape)

    def bidirectional_conv1d_silu(self, u: Tensor, w0: Tensor, b0: Optional[Tensor], w1: Tensor,
                                  b1: Optional[Tensor]) -> Tensor:
        """Vim's conv1d + SiLU, both directions in the stored order (direction 1 anti-causal); weights
        (dim, 1, K). u (batch, dim, L) -> (batch, 2, dim, L)."""
        return reverse_second(conv1d_silu_in_scan_order(u, w0, b0, w1, b1))

    def bidirectional_scan(self, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                           delta_softplus: bool) -> Tensor:
        """Vim's two directions, both in the stored order (direction 1 scanned backwards in time), summed:
        see :func:`mmvssm.ops.bidirectional_scan`."""
        return bidirectional_in_scan_order(self.multi_direction_scan, reverse_second(u), reverse_second(delta),
                                           A, reverse_second(B), reverse_second(C), D, z, delta_bias,
                                           delta_softplus)

    def atrous_scan(self, xs: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                    delta_bias: Optional[Tensor], delta_softplus: bool, height: int, width: int) -> Tensor:
        """EfficientVMamba's four directions of a ``height x width`` map: (batch, height, width, dim) in
        float32 (float64 for float64 inputs); see :func:`mmvssm.ops.atrous_scan`."""
        return atrous_by_directions(self.multi_direction_scan, xs, delta, A, B, C, D, delta_bias,
                                    delta_softplus, height, width)

    def __repr__(self) -> str:
        return f'<selective-scan backend {self.name!r}>'
