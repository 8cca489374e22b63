"""The AP5 networks (PyTorch): the U-Net generator (AP4's, one output channel), a critic for the
Wasserstein GAN and its gradient penalty."""

from __future__ import annotations

import torch
from torch import nn

from ..ap4.model import UNet


def generator(channels: int, m: object) -> UNet:
    """``(batch, channels, y, x) -> (batch, 1, y, x)``: the normalised correction of the baseline.
    The head starts at zero, so the untrained model forecasts the interpolated coarse input."""
    return UNet(channels, m.filters, m.levels, m.kernel_size, m.dropout, outputs=1)  # type: ignore[attr-defined]


class Critic(nn.Module):
    """``(batch, channels + 1, y, x) -> (batch,)``: how real a fine field looks given its inputs.
    Strided convolutions without batch norm (the gradient penalty is per sample)."""

    def __init__(self, channels: int, filters: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels + 1
        for i in range(4):
            layers += [nn.Conv2d(width, filters * 2**i, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width = filters * 2**i
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        x = self.features(torch.cat([inputs, field], dim=1))
        return self.head(x.mean(dim=(2, 3))).squeeze(-1)


def gradient_penalty(
    critic: Critic, inputs: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (|grad critic| - 1)^2 at points between real and generated."""
    mix = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(inputs, between).sum(), between, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
