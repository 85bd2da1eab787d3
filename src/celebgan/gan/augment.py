"""Differentiable augmentation of every image D sees (DiffAugment; Zhao et al. 2020).

D judges augmented real and augmented fake images alike, and G's gradient flows back through the
same augmentation, so D cannot memorise the training images' exact pixels while G still learns
the un-augmented distribution. Written here in a few lines rather than taken from kornia: the
policy is the paper's (three ops, each drawn per image), it needs nothing beyond torch, and
every op is plain arithmetic and indexing, so double backward works (R1 on augmented images).

A policy is a list of op names, e.g. [color, translation, cutout] (the paper's choice for small
data), or the paper's comma-separated string "color,translation,cutout"; empty is off. Random draws use torch's global generator, which Lightning
seeds and celebgan's checkpoints save, so runs and resumes stay exact.
"""
from collections.abc import Sequence

import torch


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def color(x: torch.Tensor) -> torch.Tensor:
    return contrast(saturation(brightness(x)))


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio of its size in x and y; vacated pixels are 0 (mid-grey)."""
    b, _, h, w = x.shape
    dy = torch.randint(-int(h * ratio + 0.5), int(h * ratio + 0.5) + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-int(w * ratio + 0.5), int(w * ratio + 0.5) + 1, (b, 1, 1), device=x.device)
    # Read pixel (i + dy, j + dx) of the image padded by one zero pixel, clamped onto the border.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio x the image size per image, at a random centre."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - cy + size_h // 2) >= 0) & ((rows - cy + size_h // 2) < size_h) \
        & ((cols - cx + size_w // 2) >= 0) & ((cols - cx + size_w // 2) < size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """images (B, C, H, W) -> the same shape, each op of the policy applied with its own draws."""

    def __init__(self, policy: str | Sequence[str] = ()):
        names = policy.split(",") if isinstance(policy, str) else policy
        self.ops = [str(name).strip() for name in names if str(name).strip()]
        unknown = [name for name in self.ops if name not in OPS]
        if unknown:
            raise ValueError(f"unknown DiffAugment op(s) {unknown}; the ops are {sorted(OPS)}")

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if images.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        for name in self.ops:
            images = OPS[name](images)
        return images.contiguous(memory_format=memory_format)
