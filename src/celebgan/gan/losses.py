"""GAN objectives as pure functions of discriminator logits.

Each pair is chosen by a file of the config group `model/loss` and bound by Hydra as a partial:
a D loss takes (real_logits, fake_logits), a G loss takes fake_logits, or (fake_logits,
real_logits) when the objective compares the two (the relativistic pairing loss). All return a
scalar mean over the batch. A new objective is a pair of functions here and a YAML file there.
"""
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Binary cross-entropy (the DCGAN paper), real and fake mini-batches summed.
#   D: -t log sigmoid(real) - (1 - t) log(1 - sigmoid(real))  -  log(1 - sigmoid(fake))
#      t is the real target: 1.0 vanilla, 0.9 with one-sided label smoothing (fakes stay 0).
#   G, non-saturating: -log sigmoid(fake) = softplus(-fake), i.e. maximise log D(G(z)).
#   G, minimax (the paper's saturating original): log(1 - sigmoid(fake)) = -softplus(fake);
#      its gradient vanishes exactly when D rejects the fakes confidently, early in training.
def d_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, *, real_label: float = 1.0) -> torch.Tensor:
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def g_minimax(fake_logits: torch.Tensor) -> torch.Tensor:
    return -F.softplus(fake_logits).mean()


# ---------------------------------------------------------------------------------------------
# Least squares (Mao et al. 2017, the a=0, b=c=1 coding): pulls logits to targets, so fakes far
# on the real side are still penalised and the gradient does not vanish.
#   D: 1/2 (real - 1)^2 + 1/2 fake^2
#   G: 1/2 (fake - 1)^2
def d_lsgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real_logits - 1).square().mean() + fake_logits.square().mean())


def g_lsgan(fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (fake_logits - 1).square().mean()


# ---------------------------------------------------------------------------------------------
# Wasserstein (Arjovsky et al. 2017): D is a critic whose score gap estimates the W1 distance when
# it is 1-Lipschitz; the gradient penalty (celebgan.gan.penalties.GradientPenalty) keeps it so.
#   D: fake - real
#   G: -fake
def d_wgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return fake_logits.mean() - real_logits.mean()


def g_wgan(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# ---------------------------------------------------------------------------------------------
# Hinge (Lim & Ye 2017; SNGAN's best DCGAN-architecture objective).
#   D: relu(1 - real) + relu(1 + fake)
#   G: -fake
def d_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()  # as WGAN's: the hinge changes only what D minimises


# ---------------------------------------------------------------------------------------------
# Relativistic pairing (RpGAN; Jolicoeur-Martineau 2019, R3GAN 2024): D scores how much more real
# each real image is than the fake beside it, and G the reverse, so neither loss saturates while
# the pair is ordered correctly. Pairs are (real_i, fake_i) of the same mini-batch position.
#   D: softplus(-(real - fake)) = -log sigmoid(real - fake)
#   G: softplus(-(fake - real))
def d_rpgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits - real_logits).mean()


def g_rpgan(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(real_logits - fake_logits).mean()


# ---------------------------------------------------------------------------------------------
# AC-GAN's auxiliary classifier (Odena et al. 2017), added to any objective above with weight
# model.aux_weight. The attributes are multi-hot, so the classifier is A independent sigmoids:
#   BCE(l, y) = mean over images and attributes of  -y log sigmoid(l) - (1 - y) log(1 - sigmoid(l))
#             = mean of softplus(l) - y l
#   D: + aux_weight * BCE(D's attribute logits on the real batch, its labels)
#   G: + aux_weight * BCE(D's attribute logits on the fakes, the labels G was asked for)
# The mean over attributes, not their sum (the labels' log-likelihood): aux_weight then weighs the
# classifier the same against the GAN loss for 2 attributes as for CelebA's 40.
def attribute_bce(attr_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(attr_logits, labels.to(attr_logits.dtype))
