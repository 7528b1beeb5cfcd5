"""The VAE's adversary: a 3D patch discriminator, the hinge GAN losses, and VQGAN's adaptive GAN weight.

PatchGAN (Isola et al. 2017) as VQGAN's NLayerDiscriminator (Esser et al. 2021) builds it, extended to time as
MAGVIT (Yu et al. 2023) and Open-Sora-Plan do: 3D convolutions with kernel (3, 4, 4) that halve height and width
but keep time, so an image (t = 1) and a clip go through the same network, and each logit judges one
space-time patch. Wan-VAE, HunyuanVideo and Open-Sora's autoencoders train with this hinge GAN, switched on late
(after the reconstruction has converged) and weighted adaptively (`adaptive_weight`).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------------

KERNEL = (3, 4, 4)  # t h w
PADDING = (1, 1, 1)  # keeps t (kernel 3), halves h w at stride 2 (kernel 4)


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (batch-size independent, unlike VQGAN's BatchNorm): up to 32 groups of >= 4 channels."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class PatchDiscriminator3D(nn.Module):
    """`b 3 t h w` in [-1, 1] (t >= 1) -> `b 1 t h' w'` logits, one per space-time patch.

    VQGAN's layout with num_layers = 3: convs of base, 2x, 4x channels at stride (1, 2, 2), one of 8x at stride 1,
    then one to a single logit, LeakyReLU(0.2) between; every conv but the first and last is normalised.
    Height and width shrink by 2^num_layers, then by 2 more: they must be at least 2^num_layers * 3.
    """

    def __init__(self, base_channels: int = 64, num_layers: int = 3, in_channels: int = 3):
        super().__init__()
        self.num_layers = num_layers
        layers = [nn.Conv3d(in_channels, base_channels, KERNEL, stride=(1, 2, 2), padding=PADDING),
                  nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = (1, 2, 2) if n < num_layers else (1, 1, 1)  # the last hidden layer keeps the patch grid
            # no bias before a norm: its shift would be subtracted right away
            layers += [nn.Conv3d(base_channels * prev, base_channels * mult, KERNEL, stride=stride, padding=PADDING,
                                 bias=False),
                       _group_norm(base_channels * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv3d(base_channels * mult, 1, KERNEL, stride=1, padding=PADDING))
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """b c t h w -> b 1 t h' w' logits (h' = h / 2^(num_layers) - 2)."""
        min_size = 3 * 2 ** self.num_layers
        if video.dim() != 5 or min(video.shape[-2:]) < min_size:
            raise ValueError(f"PatchDiscriminator3D with {self.num_layers} layers takes b c t h w with h, w >= "
                             f"{min_size}, got {tuple(video.shape)}")
        return self.net(video)


def _init(module: nn.Module) -> None:
    """VQGAN's weights_init: conv weights N(0, 0.02), norm scales N(1, 0.02) and shifts 0."""
    if isinstance(module, nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss (Lim & Ye 2017; VQGAN): 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge GAN: -E[D(G(z))]."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's eq. 7: ||grad_last rec_loss|| / (||grad_last g_loss|| + 1e-4), clamped to [0, max_weight], detached.

    It scales the GAN loss so its gradient at the decoder's last layer is as large as the reconstruction loss's:
    neither drowns the other, whatever their raw scales. `last_layer` is the decoder output conv's weight. Both
    losses must still have their graphs (this runs before backward; retain_graph keeps them for it), so it only
    works where gradients are on: skip it (weight 0) in validation, as VQGAN does.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
