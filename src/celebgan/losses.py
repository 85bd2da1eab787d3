"""GAN objectives as pure functions of discriminator logits.

Each D loss takes (real_logits, fake_logits) and each G loss takes fake_logits; all return a
scalar mean over the batch. OBJECTIVES maps a config name to its (D loss, G loss) pair.
"""
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Binary cross-entropy (the DCGAN paper), real and fake mini-batches summed.
#   D: -log sigmoid(real) * t - log(1 - sigmoid(real)) * (1 - t)  - log(1 - sigmoid(fake))
#      t is the real target: 1.0 vanilla, 0.9 with one-sided label smoothing (fakes stay 0).
#   G (non-saturating): -log sigmoid(fake) = softplus(-fake), i.e. maximise log D(G(z)).
def d_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


# ---------------------------------------------------------------------------------------------
# Hinge (Lim & Ye 2017; SNGAN's best DCGAN-architecture objective).
#   D: relu(1 - real) + relu(1 + fake)
#   G: -fake
# real_target is accepted for a uniform call signature; the hinge margin has no target.
def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


OBJECTIVES = {
    "bce": (d_bce, g_nonsaturating),
    "hinge": (d_hinge, g_hinge),
}
