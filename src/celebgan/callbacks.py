"""Training callbacks: progress grids from the fixed latents, and FID/KID during training."""
import logging
from collections.abc import Callable
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torchvision.utils import make_grid, save_image

from celebgan.errors import UserError
from celebgan.feature_cache import RealFeatureCache
from celebgan.features import generator_features
from celebgan.io import atomic_write, remove_stale_temporaries
from celebgan.metrics import FeatureDistances

log = logging.getLogger(__name__)


class SampleGrid(Callback):
    """Each epoch: a grid of the sampler's images from the module's fixed latents, written to
    TensorBoard (tag `samples`) and as `dirpath/epoch_NNNN.png` (rank 0 only)."""

    def __init__(self, *, dirpath: str, every_n_epochs: int = 1, nrow: int = 8):
        self.dirpath, self.every_n_epochs, self.nrow = Path(dirpath), every_n_epochs, nrow

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.dirpath.is_dir():
            remove_stale_temporaries(self.dirpath, log)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        images = pl_module.sample(pl_module.fixed_z)  # (N, 3, S, S) in [-1, 1]
        grid = make_grid(images.cpu(), nrow=self.nrow, normalize=True, value_range=(-1, 1))
        with atomic_write(self.dirpath / f"epoch_{epoch:04d}.png") as tmp:
            save_image(grid, tmp, format="png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=epoch)


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

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.extractor is not None and pl_module.device.type == "cpu" and self.n_samples >= 1000:
            log.warning("FID/KID on a CPU: Inception runs at a few images/s, so each evaluation of "
                        "metrics.n_samples=%d images takes tens of minutes. On a CPU use metrics=none "
                        "or lower metrics.n_samples.", self.n_samples)
        # Data loaders draw their base seed from the global RNG: measuring must leave the training
        # run exactly as it would be without metrics.
        if self.extractor is not None:
            with isolate_rng():
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
        with isolate_rng():
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
