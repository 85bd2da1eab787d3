"""Latent vector arithmetic with face attributes (Radford et al. 2016, section 6.3).

A classifier labels generated faces; the difference of the mean latents of the faces with and
without an attribute is that attribute's direction: adding it to a latent should add the attribute
to the face. The classifier is passed in (the metrics wing trains and caches it, metrics/judge.py),
so this file knows only the generator.
"""
import logging

import torch
from torch import nn

from celebgan.errors import UserError
from celebgan.gan.images import generate
from celebgan.gan.module import GAN

log = logging.getLogger(__name__)


@torch.no_grad()
def attribute_scores(classifier: nn.Module, images: torch.Tensor, index: int,
                     batch_size: int = 256) -> torch.Tensor:
    """(N,) probability of attribute `index` for (N, 3, S, S) images in [-1, 1]."""
    device = next(classifier.parameters()).device
    return torch.cat([torch.sigmoid(classifier(b.to(device))[:, index]).cpu() for b in images.split(batch_size)])


@torch.no_grad()
def attribute_direction(gan: GAN, classifier: nn.Module, index: int, z: torch.Tensor,
                        batch_size: int = 256) -> torch.Tensor:
    """(nz, 1, 1): mean latent of the samples the classifier calls positive minus the mean latent
    of the negative ones, the paper's averaged-exemplar arithmetic.

    When the generator (early in training, or for a rare attribute) gives fewer than 5% of its
    samples to one side, the top and bottom quarters by score stand in for the two sides.
    """
    if len(z) < 8:
        raise UserError(f"direction.num_latents={len(z)} is too few to find a direction; use hundreds.")
    scores = attribute_scores(classifier, generate(gan, z, batch_size, progress=True), index, batch_size)
    positive = scores > 0.5
    if min(int(positive.sum()), int((~positive).sum())) < 0.05 * len(z):
        log.warning("Only %d of %d generated faces score above 0.5 for the attribute; using the top and "
                    "bottom quarters by score instead.", int(positive.sum()), len(z))
        order = scores.argsort()
        return z[order[-(len(z) // 4):]].mean(0) - z[order[:len(z) // 4]].mean(0)
    return z[positive].mean(0) - z[~positive].mean(0)


def edit_latents(z: torch.Tensor, direction: torch.Tensor, strengths: torch.Tensor) -> torch.Tensor:
    """(R, nz, 1, 1) latents -> (R * len(strengths), nz, 1, 1): row r holds z[r] + s * direction."""
    return (z[:, None] + strengths[None, :, None, None, None] * direction).flatten(0, 1)
