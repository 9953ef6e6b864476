"""Normalisation layers shared by the backbones and by the necks/heads that read their features."""
import torch
from torch import Tensor, nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a channels-first tensor.

    Works on (B, C, L) token maps and (B, C, H, W) feature maps alike: each position is normalised over
    its C channels (biased variance). One class for what the official EfficientViM code calls
    ``LayerNorm1D`` and ``LayerNorm2D``; its parameters are stored flat, (C,), where the official ones are
    (1, C, 1) / (1, C, 1, 1) (see :func:`mmvssm.models.pretrained.flatten_norm_params`).

    Args:
        num_channels: C.
        eps: added to the variance.

    Shapes: (B, C, *) -> (B, C, *).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / torch.sqrt(var + self.eps)
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f'{self.num_channels}, eps={self.eps}'


class RMSNorm(nn.Module):
    """RMSNorm ``x / sqrt(mean(x^2) + eps) * weight``, computed in fp32 (no bias, as Mamba's kernel).

    Shapes: (..., D) -> (..., D) in the input dtype.
    """

    def __init__(self, dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dims))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)
