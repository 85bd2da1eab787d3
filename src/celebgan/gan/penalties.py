"""Gradient penalties on the discriminator, as config objects (`model.penalties`, `model/penalty=`).

Each is called as penalty(discriminator, real, fake) with the images exactly as D saw them in its
step (augmented, noised) and returns a scalar to add to the D loss. `every` is StyleGAN2's lazy
regularisation: the penalty is computed on one D step in `every` and multiplied by `every`, so its
weight per image stays that of an every-step penalty at a fraction of the cost.
"""
import torch
from torch import nn

from celebgan.errors import check_number, check_whole


def _input_gradients(discriminator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """d sum(D(x)) / dx per image, (B, C*H*W), kept in the graph so the penalty trains D."""
    images = images.detach().requires_grad_(True)
    logits = discriminator(images)
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return grad.flatten(1)


class _Penalty:
    key = ""  # its name under model.penalties in the shipped configs (conf/model/penalty/)

    def __init__(self, *, every: int = 1):
        check_whole(f"model.penalties.{self.key}.every", every, 1, " (1: a penalty on every D step)")
        self.every = every


class R1(_Penalty):
    """R1 (Mescheder et al. 2018): gamma/2 * E ||grad_x D(x)||^2 on real images.

    It makes D flat on the data, which removes the rotation around the equilibrium that keeps
    unregularised GANs from converging. StyleGAN2: gamma 10 at 1024px, lower for small images
    (gamma scales with resolution^2), every 16.
    """

    key = "r1"

    # every=16: StyleGAN2's lazy interval, as conf/model/penalty/r1.yaml (and r2.yaml) set it.
    def __init__(self, *, gamma: float = 0.1, every: int = 16):
        super().__init__(every=every)
        check_number(f"model.penalties.{self.key}.gamma", gamma, 0)
        self.gamma = gamma

    def __call__(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.gamma / 2 * _input_gradients(discriminator, real).square().sum(1).mean()


class R2(R1):
    """R2 (Mescheder et al. 2018): the same penalty on generated images, gamma/2 * E ||grad D(G(z))||^2."""

    key = "r2"

    def __call__(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return self.gamma / 2 * _input_gradients(discriminator, fake).square().sum(1).mean()


class GradientPenalty(_Penalty):
    """WGAN-GP (Gulrajani et al. 2017): weight * E (||grad D(x_hat)|| - 1)^2 at x_hat = eps x + (1 - eps) G(z).

    Keeps the critic near 1-Lipschitz along lines between real and fake images. It is a
    per-image constraint, so the critic must not use BatchNorm (conf/model/wgan_gp.yaml drops it).
    """

    key = "gp"

    def __init__(self, *, weight: float = 10.0, every: int = 1):
        super().__init__(every=every)
        check_number(f"model.penalties.{self.key}.weight", weight, 0)
        self.weight = weight

    def __call__(self, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype)
        mixed = torch.lerp(fake.detach(), real.detach(), eps)  # eps real + (1 - eps) fake
        norms = _input_gradients(discriminator, mixed).norm(dim=1)
        return self.weight * (norms - 1).square().mean()
