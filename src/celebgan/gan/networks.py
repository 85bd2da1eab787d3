"""DCGAN generator and discriminator (Radford et al. 2016), sized from the image size."""
import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from celebgan.errors import UserError

SUPPORTED_SIZES = (16, 32, 64, 128)


def num_stages(img_size: int) -> int:
    """Stride-2 stages between 4x4 and img_size (64px -> 4), or a clear error."""
    if img_size not in SUPPORTED_SIZES:
        raise UserError(
            f"img_size={img_size} is not supported: DCGAN needs a power of two in "
            f"{SUPPORTED_SIZES}. Set data.img_size to one of these (32 and 64 are the presets)."
        )
    return int(math.log2(img_size)) - 2


class Generator(nn.Module):
    """z (B, nz, 1, 1) -> image (B, nc, S, S) in [-1, 1].

    (ConvTranspose-BatchNorm-ReLU) x k then ConvTranspose-Tanh; the widths halve from
    ngf * 2^(k-1) at 4x4 down to ngf, so 64px gives the paper's 512-256-128-64.
    """

    def __init__(self, *, img_size: int = 64, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.img_size, self.nz = img_size, nz
        n = num_stages(img_size)
        width = ngf * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:  # accept (B, nz) as well as (B, nz, 1, 1)
            z = z[:, :, None, None]
        return self.main(z)


class Discriminator(nn.Module):
    """image (B, nc, S, S) -> logit (B,).

    Conv-LeakyReLU(0.2), then (Conv-BatchNorm-LeakyReLU) x k, then a 4x4 Conv to one logit.
    spectral_norm wraps every conv; batch_norm=False drops the BatchNorms (SNGAN's D has none);
    dropout adds spatial dropout (Dropout2d) after each hidden block.
    """

    def __init__(
        self,
        *,
        img_size: int = 64,
        ndf: int = 64,
        nc: int = 3,
        spectral_norm: bool = False,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.img_size = img_size
        n = num_stages(img_size)
        sn = _spectral_norm if spectral_norm else (lambda m: m)

        def block(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
            layers = [sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))]
            if norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            return layers

        layers = block(nc, ndf, norm=False)
        width = ndf
        for _ in range(n - 1):
            layers += block(width, width * 2, norm=batch_norm)
            width *= 2
        layers.append(sn(nn.Conv2d(width, 1, 4, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()  # (B,)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            # Under spectral norm the trainable tensor is the parametrization's `original`.
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
