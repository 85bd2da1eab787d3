"""Training callbacks: progress grids from the fixed latents, FID/KID during training, and one log
line per epoch."""
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.seed import isolate_rng
import torch
from torch import nn

from celebgan.errors import UserError
from celebgan.gan.images import save_png, to_grid
from celebgan.gan.module import GAN
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import generator_features
from celebgan.io import remove_stale_temporaries
from celebgan.metrics.scores import FeatureDistances

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
        images = pl_module.sample(pl_module.fixed_z, pl_module.fixed_labels)  # (N, 3, S, S) in [-1, 1]
        grid = to_grid(images.cpu(), self.nrow)
        save_png(grid, self.dirpath / f"epoch_{epoch:04d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=epoch)


class QualityMetrics(Callback):
    """Every `every_n_epochs` epochs: FID and KID of `n_samples` images from the EMA generator in
    eval mode against `n_real` cached real images of `real_split`, logged as `metrics/fid` and
    `metrics/kid` (a ModelCheckpoint monitoring metrics/fid keeps the best model).
    every_n_epochs=0 turns it off, and then nothing is loaded.

    feature_extractor: a factory (Hydra partial) of the extractor, called only when on.
    obedience: for a conditional model, a factory (Hydra partial) of the judge of its obedience
        (celebgan.attributes.Judge: judge.prepare(names, device) loads or trains the attribute
        classifier, judge(gan) scores the generator), logged as `metrics/obedience_mean` and
        `metrics/obedience/<attribute>` (balanced accuracies) at each evaluation.
    """

    def __init__(self, *, every_n_epochs: int, n_samples: int, n_real: int | None, real_split: str,
                 feature_extractor: Callable[[], nn.Module], cache_dir: str, batch_size: int = 100,
                 kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0,
                 obedience: Callable[[], Callable] | None = None):
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
        self.obedience, self.judge = obedience, None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Data loaders draw their base seed from the global RNG: measuring must leave the training
        # run exactly as it would be without metrics.
        if self.extractor is not None:
            with isolate_rng():
                if trainer.is_global_zero:
                    self._announce_cost(trainer, pl_module)
                self._load_real(trainer, pl_module)
                if self.obedience is not None and pl_module.attr_names:
                    self._load_judge(trainer, pl_module)

    def _load_judge(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The attribute classifier, trained (and cached) by one rank before the others read it; its
        ceiling, measured once."""
        self.judge = self.obedience()
        if trainer.is_global_zero:
            self.judge.prepare(pl_module.attr_names, pl_module.device)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            self.judge.prepare(pl_module.attr_names, pl_module.device)
        ceiling = self.judge.ceiling["mean"]
        log.info("Obedience's ceiling, the attribute classifier's balanced accuracy on held-out real faces: %s",
                 f"{ceiling:.3f}" if ceiling is not None else "-")

    def _announce_cost(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Logs how many images Inception will see and how long that takes at the speed measured
        here, before any of it is spent."""
        self.extractor.to(pl_module.device)
        size = pl_module.img_size
        batch = torch.rand(min(self.batch_size, 8), 3, size, size, device=pl_module.device) * 2 - 1
        with torch.no_grad():
            self.extractor(batch[:2])  # warm-up: first-call allocations and kernel selection
            start = time.perf_counter()
            self.extractor(batch)
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
        rate = len(batch) / max(time.perf_counter() - start, 1e-6)
        evaluations = epochs_to_run(trainer) // self.every_n_epochs
        cached = self.cache.has(trainer.datamodule, self.real_split, self.n_real, self.extractor)
        real = 0 if cached else (self.n_real or 0)
        total = real + evaluations * self.n_samples
        log.info("FID/KID: %d evaluation(s) of %d generated images%s; %s runs at %.0f img/s here, so "
                 "about %s in all. metrics=none turns them off; metrics.n_samples and metrics.n_real size them.",
                 evaluations, self.n_samples,
                 " (real features cached)" if cached else f" + {real} real images once",
                 type(self.extractor).__name__, rate, format_duration(total / rate))

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
        if self.judge is not None:
            # The same latents and weights on every rank: every rank computes and logs the same values.
            obeyed = self.judge(pl_module)
            values = {f"metrics/obedience/{name}": s["balanced"] for name, s in obeyed["per_attribute"].items()}
            pl_module.log_dict({"metrics/obedience_mean": obeyed["mean"], **values},
                               on_step=False, on_epoch=True, sync_dist=False)
            log.info("epoch %d: obedience %.3f (ceiling %s): %s", trainer.current_epoch, obeyed["mean"],
                     f"{obeyed['ceiling']['mean']:.3f}" if obeyed["ceiling"]["mean"] is not None else "-",
                     "  ".join(f"{name} {s['balanced']:.2f}" for name, s in obeyed["per_attribute"].items()))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.distances, self.judge = None, None


def epochs_to_run(trainer: Trainer) -> int:
    """The epochs this fit will end, as far as max_epochs and max_steps tell before it starts."""
    max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if trainer.max_steps not in (None, -1):
        per_epoch = trainer.num_training_batches
        if per_epoch in (None, 0, math.inf):
            per_epoch = len(trainer.datamodule.train_dataloader())
        # Lightning's max_steps counts optimizer steps; an epoch is per_epoch training steps (batches).
        steps = GAN.training_steps(trainer.max_steps, trainer.lightning_module.n_dis)
        max_epochs = min(max_epochs, math.ceil(steps / max(per_epoch, 1)))
    return int(max(max_epochs - trainer.current_epoch, 1)) if max_epochs != math.inf else 1


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EpochLog(Callback):
    """One log line per epoch (rank 0): the epoch's mean losses and D outputs, its images and time.
    The line reaches train.log and the console, where it replaces the progress bar when the
    console is not a terminal (a CI log, a SLURM .out file)."""

    NAMES = {"d_loss": "train/d_loss", "g_loss": "train/g_loss", "D(x)": "train/D_x", "D(G(z))": "train/D_G_z1"}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.monotonic()  # a run resumed mid-epoch starts with no epoch start

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        # The epoch's means as the module sums them (this process's), before it logs them as epoch/NAME.
        totals = pl_module.epoch_totals
        values = "  ".join(f"{name} {float(totals[key][0]) / totals[key][1]:.3f}"
                           for name, key in self.NAMES.items() if key in totals)
        last = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        log.info("epoch %d%s  step %d  %s  (%s)", trainer.current_epoch + 1, last, pl_module.steps_done,
                 values, format_duration(time.monotonic() - self.start))
