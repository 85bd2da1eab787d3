"""Training callbacks: progress grids from the fixed latents, FID/KID during training, and one log
line per epoch."""
import logging
import time
from collections.abc import Callable
from pathlib import Path

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from lightning.pytorch.utilities.seed import isolate_rng
import torch
from torch import nn

from celebgan.errors import UserError
from celebgan.gan.images import caption, save_png, to_grid
from celebgan.gan import clock
from celebgan.io import format_duration, remove_stale_temporaries
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import generated_per_second
from celebgan.metrics.registry import calc_metrics
from celebgan.metrics.scores import scores_seconds
from celebgan.run.checkpoint import real_subset

log = logging.getLogger(__name__)


# Below this standard deviation of its pixels (in [0, 1], a PNG's range) an image reads as one flat
# colour: a barely trained G in eval mode draws the same grey everywhere (0.005-0.01 after a few steps).
FLAT_STD = 0.02


def image_spread(images: torch.Tensor) -> float:
    """(N, 3, S, S) in [-1, 1] -> the largest per-image standard deviation of the pixels, in [0, 1] units."""
    return float((images.float() / 2).flatten(1).std(dim=1).max())


class SampleGrid(Callback):
    """Each epoch: a grid of the sampler's images from the module's fixed latents, written to
    TensorBoard (tag `train/samples`, at the training steps done, the x-axis of every curve)
    and as `dirpath/epoch_NNNN.png`, NNNN the epoch counted from 1 as the console does (rank 0 only)."""

    def __init__(self, *, dirpath: str, every_n_epochs: int = 1, nrow: int = 8):
        self.dirpath, self.every_n_epochs, self.nrow = Path(dirpath), every_n_epochs, nrow
        self.warned_flat = False

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.warned_flat = False
        if trainer.is_global_zero and self.dirpath.is_dir():
            remove_stale_temporaries(self.dirpath, log)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs or not trainer.is_global_zero:
            return
        images = pl_module.sample(pl_module.fixed_z, pl_module.fixed_labels)  # (N, 3, S, S) in [-1, 1]
        grid = to_grid(images.cpu(), self.nrow)
        if (spread := image_spread(images)) < FLAT_STD and not self.warned_flat:
            self.warned_flat = True  # once a run: the caption says it on every such grid
            which = "EMA generator" if pl_module.generator_ema is not None else "generator"
            log.warning("The grid's images are nearly uniform (per-image std at most %.3f of the pixel range) after "
                        "%d training steps. Most likely too few steps: in eval mode the %s normalises with the "
                        "BatchNorm running statistics of a barely trained G, which draw one flat colour. Train "
                        "longer (trainer.max_steps, trainer.max_epochs).", spread, pl_module.steps_done, which)
        if spread < FLAT_STD:
            grid = caption(grid, [(grid.shape[-1] / 2, "nearly uniform: too few steps?")])
        save_png(grid, self.dirpath / f"epoch_{epoch + 1:04d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("train/samples", grid, global_step=pl_module.steps_done)


class PlainModelSummary(ModelSummary):
    """Lightning's model summary table without its FLOPs column and total, which Lightning counts
    only for a module with an example input (0 everywhere here). The table is drawn here, from
    what Lightning hands `summarize` (its public override), in Lightning's own layout."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  **summarize_kwargs) -> None:  # summarize_kwargs: total_flops among them
        columns = [column for column in summary_data if column[0] != "FLOPs"]
        log.info("\n%s", summary_table(columns, total_parameters, trainable_parameters, model_size,
                                       total_training_modes))


def summary_table(columns: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, training_modes: dict[str, int]) -> str:
    """The model summary: one row per layer under `columns` (header, cells), then the parameter
    counts, the size in MB and how many modules are in train and in eval mode."""
    widths = [max([len(header), *(len(str(cell)) for cell in cells)]) for header, cells in columns]
    rule = "-" * (sum(widths) + 3 * (len(columns) + 1))
    rows = [" | ".join(f"{header:<{w}}" for (header, _), w in zip(columns, widths)), rule]
    rows += [" | ".join(f"{str(cells[i]):<{w}}" for (_, cells), w in zip(columns, widths))
             for i in range(len(columns[0][1]) if columns else 0)]
    totals = [(get_human_readable_count(trainable_parameters), "Trainable params"),
              (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
              (get_human_readable_count(total_parameters), "Total params"),
              (f"{model_size:,.3f}", "Total estimated model params size (MB)"),
              (training_modes["train"], "Modules in train mode"),
              (training_modes["eval"], "Modules in eval mode")]
    return "\n".join([*rows, rule, *(f"{value!s:<10}{what}" for value, what in totals)])


class QualityMetrics(Callback):
    """Every `every_n_epochs` epochs: FID and KID of `n_samples` images from the EMA generator in
    eval mode against `n_real` cached real images of `real_split` (metrics.registry.calc_metrics, as
    `celebgan.evaluate` measures), logged as `metrics/fid` and `metrics/kid` (a ModelCheckpoint
    monitoring metrics/fid keeps the best model).
    every_n_epochs=0 turns it off, and then nothing is loaded.

    feature_extractor: a factory (Hydra partial) of the extractor, called only when on.
    obedience: for a conditional model, a factory (Hydra partial) of the judge of its obedience
        (celebgan.metrics.judge.Judge, handed run.checkpoint.real_subset to read real faces with:
        judge.prepare(names, device) loads or trains the attribute classifier, judge(gan) scores the
        generator through the registry's `obedience`), logged as `metrics/obedience_mean` and
        `metrics/obedience/<attribute>` (balanced accuracies of consistent requests),
        `metrics/obedience_independent_mean` and `.../obedience_independent/<attribute>` (independent
        ones) and `metrics/obedience_ceiling_mean` (the judge on real faces) at each evaluation.
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
        self.real: torch.Tensor | None = None  # (n_real, F) cached features, kept for every evaluation
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
        self.judge = self.obedience(read=real_subset)
        if trainer.is_global_zero:
            self.judge.prepare(pl_module.attr_names, pl_module.device)
        trainer.strategy.barrier()
        if not trainer.is_global_zero:
            self.judge.prepare(pl_module.attr_names, pl_module.device)
        ceiling = self.judge.ceiling["mean"]
        log.info("Obedience's ceiling, the attribute classifier's balanced accuracy on held-out real faces: %s",
                 f"{ceiling:.3f}" if ceiling is not None else "-")

    def _announce_cost(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Logs how many images the generator and Inception will see and how long that and the FID/KID
        computations take at the speed measured here, before any of it is spent: the whole time the
        metrics add to a run (a search's trial, say), on top of its training."""
        self.extractor.to(pl_module.device)
        rate = generated_per_second(pl_module, self.extractor,
                                    batch_size=min(self.batch_size, self.n_samples))
        scores = scores_seconds(getattr(self.extractor, "num_features", 2048), device=pl_module.device,
                                kid_subset_size=min(self.kid_subset_size, self.n_samples), kid_subsets=self.kid_subsets)
        # An epoch's steps, before the Trainer has its training data: only max_steps needs them.
        per_epoch = None if trainer.max_steps in (None, -1) else \
            clock.steps_per_epoch(trainer) or len(trainer.datamodule.train_dataloader())
        evaluations = clock.epochs_to_run(trainer, pl_module.n_dis, per_epoch) // self.every_n_epochs
        cached = self.cache.has(trainer.datamodule, self.real_split, self.n_real, self.extractor)
        real = 0 if cached else (self.n_real or 0)
        total = (real + evaluations * self.n_samples) / rate + evaluations * scores
        log.info("FID/KID: %d evaluation(s) of %d generated images%s; %s runs at %.0f img/s here (with the "
                 "generator), and each FID/KID computation takes %s, so about %s in all on top of the training. "
                 "metrics=none turns them off; metrics.n_samples and metrics.n_real size them.",
                 evaluations, self.n_samples,
                 " (real features cached)" if cached else f" + {real} real images once",
                 type(self.extractor).__name__, rate, format_duration(scores), format_duration(total))

    def _load_real(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.extractor.to(pl_module.device)
        datamodule = trainer.datamodule
        real = None
        if trainer.is_global_zero:  # one rank computes the cache, the others then read it
            real = self.cache.get(datamodule, self.real_split, self.n_real, self.extractor,
                                  batch_size=self.batch_size, device=pl_module.device)
        trainer.strategy.barrier()
        if real is None:
            real = self.cache.get(datamodule, self.real_split, self.n_real, self.extractor,
                                  batch_size=self.batch_size, device=pl_module.device)
        self.real = real

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.real is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with isolate_rng():
            self._measure(trainer, pl_module)

    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank, world = trainer.global_rank, trainer.world_size
        # Each rank generates its share of n_samples from its own latents and adds its share of the
        # real features; torchmetrics gathers both. The judge's latents are the same on every rank.
        scores = calc_metrics(["fid", "kid", *(["obedience"] if self.judge is not None else [])],
                              real=self.real, gan=pl_module, extractor=self.extractor, n_samples=self.n_samples,
                              seed=self.seed * 1_000_003 + rank, batch_size=self.batch_size, rank=rank,
                              world_size=world, kid_subset_size=self.kid_subset_size, kid_subsets=self.kid_subsets,
                              judge=self.judge, device=pl_module.device)
        # Already gathered over ranks by torchmetrics: every rank logs the same value.
        pl_module.log_dict({"metrics/fid": scores["fid"], "metrics/kid": scores["kid"]},
                           on_step=False, on_epoch=True, sync_dist=False)
        log.info("epoch %d: FID %.3f, KID %.5f (%d generated vs %d real images)",
                 trainer.current_epoch + 1, scores["fid"], scores["kid"], self.n_samples, len(self.real))
        if self.judge is not None:
            # The same latents and weights on every rank: every rank computes and logs the same values.
            obeyed = scores["obedience"]
            values = {f"metrics/obedience/{name}": s["balanced"] for name, s in obeyed["per_attribute"].items()}
            values |= {f"metrics/obedience_independent/{name}": s["balanced"]
                       for name, s in obeyed["independent"]["per_attribute"].items()}
            means = {"metrics/obedience_mean": obeyed["mean"],
                     "metrics/obedience_independent_mean": obeyed["independent"]["mean"],
                     "metrics/obedience_ceiling_mean": obeyed["ceiling"]["mean"]}
            pl_module.log_dict({k: v for k, v in {**means, **values}.items() if v is not None},
                               on_step=False, on_epoch=True, sync_dist=False)
            shown = lambda v: f"{v:.3f}" if v is not None else "-"  # noqa: E731
            log.info("epoch %d: obedience %s (independent requests %s; ceiling %s): %s", trainer.current_epoch + 1,
                     shown(obeyed["mean"]), shown(obeyed["independent"]["mean"]), shown(obeyed["ceiling"]["mean"]),
                     "  ".join(f"{name} {shown(s['balanced'])}" for name, s in obeyed["per_attribute"].items()))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.real, self.judge = None, None


class EpochLog(Callback):
    """One log line per epoch (rank 0): the epoch's mean losses and D outputs, its images and time.
    The line reaches train.log and the console, where it replaces the progress bar when the
    console is not a terminal (a CI log, a SLURM .out file).

    Within an epoch (a CelebA-64 epoch is some 1,266 steps), a progress line at most every
    `every_n_seconds` of wall time: the training step of the run's total, the images seen (kimg),
    the speed since the last line and the run's ETA, which the epoch's line carries too. 0: none.
    """

    NAMES = {"d_loss": "train/d_loss", "g_loss": "train/g_loss", "D(x)": "train/D_x", "D(G(z))": "train/D_G_z1"}

    def __init__(self, *, every_n_seconds: float = 60):
        if isinstance(every_n_seconds, bool) or not isinstance(every_n_seconds, (int, float)) or every_n_seconds < 0:
            raise UserError(f"callbacks.epoch_log.every_n_seconds={every_n_seconds!r} must be a number of seconds "
                            ">= 0 (0: no progress lines within an epoch).")
        self.every_n_seconds = every_n_seconds

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.monotonic()  # a run resumed mid-epoch starts with no epoch start
        # The speed and ETA count this process's steps since it started (a resumed run's too).
        self.first_step, self.run_start = pl_module.steps_done, self.start
        self.last_line, self.last_step, self.images_per_step = self.start, pl_module.steps_done, 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        # A stop signal's step ends the run: no progress line after "stopping after the training step"
        if not trainer.is_global_zero or not self.every_n_seconds or trainer.received_sigterm:
            return
        if not self.images_per_step:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, 3, S, S)
            self.images_per_step = len(images) * trainer.world_size
        now = time.monotonic()
        if now - self.last_line < self.every_n_seconds:
            return
        step, total = pl_module.steps_done, clock.run_steps(trainer, pl_module.n_dis)
        speed = (step - self.last_step) * self.images_per_step / max(now - self.last_line, 1e-9)
        of_total = f"/{total:,}" if total else ""
        log.info("epoch %d%s  step %s%s  %.1f kimg  %.0f img/s%s", trainer.current_epoch + 1, self._of_epochs(trainer),
                 f"{step:,}", of_total, clock.images(step, self.images_per_step) / 1000, speed, self._eta(pl_module, total, now))
        self.last_line, self.last_step = now, step

    @staticmethod
    def _of_epochs(trainer: Trainer) -> str:
        return "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"

    def _eta(self, pl_module: LightningModule, total: int | None, now: float) -> str:
        """`  ETA 12 min`: the run's remaining steps at this process's mean speed; "" when the run has
        no end or nothing to time yet."""
        step = pl_module.steps_done
        done = step - self.first_step
        if not total or not done or step >= total:
            return ""
        return f"  ETA {format_duration((total - step) * (now - self.run_start) / done)}"

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        # The epoch's means as the module sums them (this process's), before it logs them as train_epoch/NAME.
        totals = pl_module.epoch_totals
        values = "  ".join(f"{name} {float(totals[key][0]) / totals[key][1]:.3f}"
                           for name, key in self.NAMES.items() if key in totals)
        last = "" if trainer.max_epochs in (None, -1) else f"/{trainer.max_epochs}"
        now = time.monotonic()
        log.info("epoch %d%s  step %d  %s  (%s)%s", trainer.current_epoch + 1, last, pl_module.steps_done,
                 values, format_duration(now - self.start), self._eta(pl_module, clock.run_steps(trainer, pl_module.n_dis), now))
