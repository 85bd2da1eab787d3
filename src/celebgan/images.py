"""Latents, generated images and image files: what the commands that look at a generator share
(sample.py, attributes.py)."""
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from celebgan.io import atomic_write
from celebgan.module import GAN


def latents(n: int, nz: int, seed: int) -> torch.Tensor:
    """(n, nz, 1, 1) standard normal latents, the same for a seed on every machine (drawn on the CPU)."""
    return torch.randn(n, nz, 1, 1, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(gan: GAN, z: torch.Tensor, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """(N, nz, 1, 1) latents -> (N, 3, S, S) CPU images in [-1, 1], batch by batch."""
    chunks = z.split(batch_size)
    return torch.cat([gan.sample(c).cpu() for c in tqdm(chunks, desc="generating", disable=not progress)])


def to_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> (3, H, W) in [0, 1], 2px gaps."""
    return make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1))


def save_png(grid: torch.Tensor, path: Path) -> Path:
    """(3, H, W) in [0, 1] -> a PNG at `path`, which holds the whole image or its previous content."""
    with atomic_write(path) as tmp:
        save_image(grid, tmp, format="png")
    return path
