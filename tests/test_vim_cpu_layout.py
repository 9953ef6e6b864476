"""Vim's two directions on backends without the fused layout (``cpu``, ``reference``, ``chunked``): the conv
as shifted multiply-adds and the shared gate applied after the direction sum, against the official
composition (flip, causal ``F.conv1d``, flip back; each direction scanned with its own gated z), values and
gradients in float64, odd L, both directions."""
import pytest
import torch
import torch.nn.functional as F

from mmvssm.ops import available_backends, bidirectional_conv1d_silu, bidirectional_scan, selective_scan
from mmvssm.ops.scan_utils import conv1d_silu_in_scan_order

BACKENDS = [b for b in ('reference', 'chunked', 'cpu') if b in available_backends()]


def official_conv(u, w0, b0, w1, b1):
    """Direction 0 causal conv of u, direction 1 causal conv of flip(u) (kept in scan order)."""
    k, length = w0.shape[-1], u.shape[-1]
    y0 = F.conv1d(u, w0, b0, padding=k - 1, groups=u.shape[1])[..., :length]
    y1 = F.conv1d(u.flip(-1), w1, b1, padding=k - 1, groups=u.shape[1])[..., :length]
    return F.silu(torch.stack([y0, y1], dim=1))


@pytest.mark.parametrize('k', [4, 3])
@pytest.mark.parametrize('bias', [True, False])
def test_conv1d_silu_in_scan_order_matches_official(k, bias):
    g = torch.Generator().manual_seed(k + bias)
    dim, length = 6, 11

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    # u as the layer sees it: a transposed (strided) view
    u = leaf(2, length, dim)
    w0, w1 = leaf(dim, 1, k), leaf(dim, 1, k)
    b0, b1 = (leaf(dim), leaf(dim)) if bias else (None, None)
    leaves = [t for t in (u, w0, w1, b0, b1) if t is not None]
    got = conv1d_silu_in_scan_order(u.transpose(1, 2), w0, b0, w1, b1)
    want = official_conv(u.transpose(1, 2), w0, b0, w1, b1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn(got.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, leaves, dy), torch.autograd.grad(want, leaves, dy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the in-place SiLU of inference
        torch.testing.assert_close(conv1d_silu_in_scan_order(u.transpose(1, 2), w0, b0, w1, b1), want)


@pytest.mark.parametrize('backend', BACKENDS)
def test_bidirectional_gate_after_sum_matches_per_direction_gate(backend):
    g = torch.Generator().manual_seed(3)
    batch, dim, length, n = 2, 8, 13, 4

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    w0, w1 = leaf(dim, 1, 4), leaf(dim, 1, 4)
    x, z = leaf(batch, dim, length), leaf(batch, dim, length)
    delta, B, C = leaf(batch, 2, dim, length, scale=0.5), leaf(batch, 2, n, length), leaf(batch, 2, n, length)
    A = (-torch.rand(2, dim, n, generator=g, dtype=torch.float64) - 0.1).requires_grad_()
    D, bias = leaf(2, dim), leaf(2, dim)
    leaves = (x, z, w0, w1, delta, B, C, A, D, bias)

    u = bidirectional_conv1d_silu(x, w0, None, w1, None, backend=backend)  # direction 1 in scan order
    got = bidirectional_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                             backend=backend)
    # Official: each direction scanned with its own gate (direction 1 with flip(z)), the second flipped back.
    ref_u = official_conv(x, w0, None, w1, None)
    ys = [selective_scan(ref_u[:, d], delta[:, d], A[d], B[:, d], C[:, d], D[d], z if d == 0 else z.flip(-1),
                         bias[d], delta_softplus=True, backend='reference') for d in range(2)]
    want = ys[0] + ys[1].flip(-1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    dy = torch.randn(got.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, leaves, dy), torch.autograd.grad(want, leaves, dy)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
