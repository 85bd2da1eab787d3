"""A trained generator for use from Python (a notebook, another project):

    G = celebgan.load_generator("outputs/runs/RUN/checkpoints/last.ckpt")
    images = G.sample(16, seed=0)           # (16, 3, S, S) in [0, 1]
    faces = G.sample(4, seed=0, pil=True)   # four PIL images
    smiles = G.sample(8, seed=0, attributes={"Smiling": 1}, truncation=0.7)  # a conditional model's
"""
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms.functional import to_pil_image

from celebgan.run.checkpoint import load_gan
from celebgan.devices import pick_device
from celebgan.gan.labels import LabelTable
from celebgan.gan.images import draw_conditions, latents, requested_attributes, truncate


class TrainedGenerator:
    """The generator of a training run, in eval mode on one device: the EMA weights when the run
    kept an EMA (the ones its grids and metrics show), else the trained weights.

    config: the run's resolved config (config["model"], config["data"], ...).
    attr_names / attr_frequencies: a conditional generator's attributes and their training shares
        (A,). () for an unconditional generator.
    label_table: the training split's label rows and their counts (celebgan.gan.labels): labels not
        given are drawn from the rows that agree with those given; None (a checkpoint written before
        it was kept): each from its training share.
    """

    def __init__(self, network: nn.Module, config: dict[str, Any], device: torch.device | str, *,
                 attr_names: list[str] = (), attr_frequencies: torch.Tensor | None = None,
                 label_table: LabelTable | None = None):
        self.device = torch.device(device)
        self.network = network.eval().requires_grad_(False).to(self.device)
        self.config = config
        self.attr_names = list(attr_names)
        self.attr_frequencies = (attr_frequencies if attr_frequencies is not None
                                 else torch.full((len(self.attr_names),), 0.5)).float().cpu()
        self.label_table = label_table

    @property
    def nz(self) -> int:
        return self.network.nz

    @property
    def img_size(self) -> int:
        return self.network.img_size

    def latents(self, n: int, seed: int | None = None, truncation: float | None = None) -> torch.Tensor:
        """(n, nz, 1, 1) latents; a seed gives the same ones on every machine and device.
        truncation: each coordinate from a normal truncated to +-truncation (BigGAN's trick); None: off."""
        if seed is None:
            return truncate(torch.randn(n, self.nz, 1, 1), truncation)
        return latents(n, self.nz, seed, truncation)

    def labels(self, n: int, seed: int | None = None,
               attributes: Mapping[str, int] | None = None) -> torch.Tensor | None:
        """(n, A) float labels in {0, 1}: those named in `attributes` ({"Smiling": 1}) as given, the
        others drawn from the training faces that agree with them (a seed gives the same ones on every machine); None
        for an unconditional generator. A name the generator lacks is a UserError listing its own."""
        fixed = requested_attributes(attributes, self.attr_names)
        return draw_conditions(self.attr_names, self.attr_frequencies, n, seed, fixed, self.label_table)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, nz[, 1, 1]) latents [and (B, A) labels] -> (B, 3, S, S) images in [0, 1], on this
        generator's device. A conditional generator without labels draws them (labels())."""
        z = z.reshape(len(z), self.nz, 1, 1).to(self.device)
        if labels is None:
            labels = self.labels(len(z))
        labels = labels.float().to(self.device) if labels is not None else None
        return ((self.network(z, labels).float() + 1) / 2).clamp_(0, 1)

    def sample(self, n: int, *, seed: int | None = None, batch_size: int = 256, pil: bool = False,
               attributes: Mapping[str, int] | None = None,
               truncation: float | None = None) -> torch.Tensor | list[Image.Image]:
        """n images: a (n, 3, S, S) CPU tensor in [0, 1], or n PIL images with pil=True.
        The same seed gives the same images; seed=None draws new latents each call. A conditional
        generator's labels are those in `attributes` ({"Smiling": 1}), the others drawn with the same
        seed from the training faces that have those (labels()). truncation: see latents."""
        labels = self.labels(n, seed, attributes)  # a bad name fails before anything is drawn
        z = self.latents(n, seed, truncation)
        chunks = zip(z.split(batch_size), labels.split(batch_size) if labels is not None else [None] * len(z))
        images = torch.cat([self(zs, ls).cpu() for zs, ls in chunks]) if n else \
            torch.empty(0, 3, self.img_size, self.img_size)
        return [to_pil_image(image) for image in images] if pil else images

    def to(self, device: torch.device | str) -> "TrainedGenerator":
        self.device = torch.device(device)
        self.network.to(self.device)
        return self


def load_generator(path: str | Path, *, device: torch.device | str | None = None) -> TrainedGenerator:
    """The generator of a celebgan checkpoint (RUN/checkpoints/last.ckpt or best.ckpt), on `device`
    (default: a CUDA GPU, else Apple's MPS, else the CPU). A file that is not a celebgan
    checkpoint raises celebgan.errors.UserError saying so."""
    gan, config = load_gan(path)
    return TrainedGenerator(gan.sampler, config, pick_device(device if device is not None else "auto"),
                            attr_names=gan.attr_names, attr_frequencies=gan.attr_frequencies,
                            label_table=gan.label_table)
