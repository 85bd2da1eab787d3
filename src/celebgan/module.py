"""The GAN LightningModule: alternating D and G steps under manual optimization."""
import copy
from collections.abc import Callable

import torch
from lightning import LightningModule
from torch import nn

from celebgan.errors import UserError
from celebgan.losses import OBJECTIVES


class GAN(LightningModule):
    """DCGAN training (Radford et al. 2016) with an EMA of the generator for samples and metrics.

    generator / discriminator: the networks (Hydra builds them from model.generator / .discriminator).
    g_optimizer / d_optimizer: partial optimizers, bound to each network's parameters here.
    objective: a key of celebgan.losses.OBJECTIVES ("bce" is the paper's).
    real_label: target of real images in the D loss; 0.9 is one-sided label smoothing.
    ema_half_life: half-life of the generator EMA in images (StyleGAN's 10k); 0 turns EMA off.
    ema_rampup: early on, the half-life is at most this fraction of the images seen so far, so the
        EMA does not drag the random initial weights along (StyleGAN's 0.05); null disables it.
    num_fixed / fixed_seed: the latent batch drawn once for every progress grid of the run.
    compile: torch.compile G and D (in place: checkpoints keep their plain parameter names).
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Callable[..., torch.optim.Optimizer],
        d_optimizer: Callable[..., torch.optim.Optimizer],
        objective: str = "bce",
        real_label: float = 1.0,
        ema_half_life: float = 10_000,
        ema_rampup: float | None = 0.05,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        compile: bool = False,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise UserError(f"model.objective={objective!r} is not one of {sorted(OBJECTIVES)}.")
        if objective != "bce" and real_label != 1.0:
            raise UserError(f"model.real_label={real_label} (label smoothing) only applies to the bce objective.")
        if not 0.0 < real_label <= 1.0:
            raise UserError(f"model.real_label={real_label} must lie in (0, 1]; 0.9 is one-sided label smoothing.")
        if generator.img_size != discriminator.img_size:
            raise UserError(f"generator.img_size={generator.img_size} differs from "
                            f"discriminator.img_size={discriminator.img_size}.")
        self.save_hyperparameters(ignore=["generator", "discriminator", "g_optimizer", "d_optimizer"], logger=False)
        self.automatic_optimization = False
        # channels_last: the memory format whose convolution kernels are fastest on tensor cores
        # and in oneDNN on CPU; inputs are converted to it in training_step.
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.d_loss, self.g_loss = OBJECTIVES[objective]
        self.real_label = real_label
        self.ema_half_life, self.ema_rampup = ema_half_life, ema_rampup
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema_half_life > 0 else None
        fixed_z = torch.randn(num_fixed, generator.nz, 1, 1, generator=torch.Generator().manual_seed(fixed_seed))
        self.register_buffer("fixed_z", fixed_z)  # (N, nz, 1, 1), saved with the weights
        if compile:
            generator.compile()
            discriminator.compile()

    @property
    def img_size(self) -> int:
        return self.generator.img_size

    @property
    def sampler(self) -> nn.Module:
        """The generator that grids, metrics and sampling use: the EMA copy when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """(B, nz[, 1, 1]) latents -> (B, 3, S, S) images in [-1, 1], from the sampler in eval mode."""
        g = self.sampler
        was_training = g.training
        g.eval()
        try:
            return g(z.to(self.device)).float()
        finally:
            g.train(was_training)

    def configure_optimizers(self):
        return self.g_optimizer(self.generator.parameters()), self.d_optimizer(self.discriminator.parameters())

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, 3, S, S) in [-1, 1]
        real = real.contiguous(memory_format=torch.channels_last)  # a no-op for the batch loaders' output
        g_opt, d_opt = self.optimizers()
        z = torch.randn(real.size(0), self.generator.nz, 1, 1, device=real.device)
        fake = self.generator(z)  # one forward, reused: detached for D, attached for G

        # Optimize discriminator: a real and a separate fake mini-batch, losses summed.
        with self.toggled_optimizer(d_opt):
            d_real_logits = self.discriminator(real)
            d_fake_logits = self.discriminator(fake.detach())
            d_loss = self.d_loss(d_real_logits, d_fake_logits, self.real_label)
            d_opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            d_opt.step()

        # Optimize generator: non-saturating, the same fakes scored by the updated D.
        with self.toggled_optimizer(g_opt):
            g_fake_logits = self.discriminator(fake)
            g_loss = self.g_loss(g_fake_logits)
            g_opt.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            g_opt.step()

        # global_step counts optimizer steps, two per training step; batches are equal (drop_last).
        batch_images = real.size(0) * self.trainer.world_size
        self.update_ema(batch_images, images_seen=self.trainer.global_step // 2 * batch_images)
        # D_x, D_G_z1 (fakes before the D update) and D_G_z2 (after it, as G sees them) follow
        # pytorch/examples' DCGAN printout. Tensors, not .item(): no host sync in the step.
        self.log_dict(
            {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                "train/D_x": torch.sigmoid(d_real_logits.detach()).mean(),
                "train/D_G_z1": torch.sigmoid(d_fake_logits.detach()).mean(),
                "train/D_G_z2": torch.sigmoid(g_fake_logits.detach()).mean(),
            },
            on_step=True, on_epoch=True, prog_bar=False, sync_dist=True,
        )

    @torch.no_grad()
    def update_ema(self, batch_images: int, images_seen: int) -> None:
        """Move the EMA towards G: beta = 0.5 ** (batch_images / half_life)."""
        if self.generator_ema is None:
            return
        half_life = self.ema_half_life
        if self.ema_rampup is not None:
            half_life = min(half_life, images_seen * self.ema_rampup)
        beta = 0.5 ** (batch_images / max(half_life, 1e-8))
        torch._foreach_lerp_(list(self.generator_ema.parameters()), list(self.generator.parameters()), 1.0 - beta)
        # BatchNorm running statistics are copied, not averaged: they describe the live G.
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)
