"""Checks that stop a run with one clear message: device counts before it starts, non-finite losses
while it trains; and the watch that warns about (or stops) a run that diverged or collapsed."""
import logging
import os
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer

from celebgan.devices import training_device
from celebgan.errors import UserError, check_whole
from celebgan.run import lock

log = logging.getLogger(__name__)


def check_devices(accelerator: str, devices, sync_batchnorm: bool = False) -> None:
    """A device request this machine cannot meet fails here, before any data is read."""
    on = training_device(accelerator)
    if sync_batchnorm and on != "cuda":
        raise UserError("trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm does not run on CPU. "
                        "Drop it on CPU; each process then normalises with its own batch statistics.")
    if not isinstance(devices, int) and not (isinstance(devices, str) and devices.lstrip("-").isdigit()):
        return  # "auto" or a list of device ids: Lightning checks those itself
    devices = int(devices)
    gpus = torch.cuda.device_count()
    if on == "cuda":
        if devices > gpus:
            raise UserError(
                f"trainer.devices={devices} but this machine has {gpus} visible GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
                f"Use trainer.devices={max(gpus, 1)} or fewer, or more nodes with trainer.num_nodes.")
    elif accelerator == "auto" and devices > 1:
        raise UserError(
            f"trainer.devices={devices} asks for {devices} GPUs but none is available. To train with "
            f"{devices} CPU processes (DDP over gloo), say so: trainer.accelerator=cpu trainer.devices={devices}.")
    elif accelerator == "cpu" and devices > (os.cpu_count() or 1):
        raise UserError(f"trainer.devices={devices} CPU processes but this machine has {os.cpu_count()} cores. "
                        f"Use trainer.devices={os.cpu_count() or 1} or fewer (1 trains in this process alone).")


def check_trainer_counts(trainer_cfg) -> None:
    """Lightning takes a string or a negative count here and fails only once training runs."""
    for key, minimum, note in (("max_epochs", -1, " (-1: no limit)"), ("max_steps", -1, " (-1: no limit)"),
                               ("min_epochs", 0, ""), ("log_every_n_steps", 1, ""), ("num_nodes", 1, "")):
        if trainer_cfg.get(key) is not None:
            check_whole(f"trainer.{key}", trainer_cfg.get(key), minimum, note)


class NonFiniteGuard(Callback):
    """Stops training when a logged loss becomes NaN or infinite, naming the step, before any
    checkpoint with the diverged weights is written: last.ckpt keeps the last good state.

    The check reads the losses the module logs each step and keeps a device-side flag, so a step
    costs no host sync; the flag is read every `check_every_n_steps` training steps and before every
    checkpoint. Under DDP the logged losses are reduced over ranks, so all ranks stop together.
    """

    def __init__(self, *, keys: tuple[str, ...] = ("train/d_loss", "train/g_loss"),
                 check_every_n_steps: int = 50):
        self.keys, self.check_every_n_steps = tuple(keys), check_every_n_steps
        self.first_bad: torch.Tensor | None = None  # training step of the first non-finite loss, or -1
        self.bad_values: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        values = [trainer.callback_metrics[k] for k in self.keys if k in trainer.callback_metrics]
        if not values:
            return
        losses = torch.stack([v.detach().float().reshape(()) for v in values])
        if self.first_bad is None:
            self.first_bad = torch.full((), -1, dtype=torch.long, device=losses.device)
            self.bad_values = torch.zeros_like(losses)
        step = pl_module.steps_done
        new = (~torch.isfinite(losses).all()) & (self.first_bad < 0)
        self.first_bad = torch.where(new, torch.full_like(self.first_bad, step), self.first_bad)
        self.bad_values = torch.where(new, losses, self.bad_values)
        if self.check_every_n_steps and step % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # train() puts the guards first, so this runs before the epoch's grid and checkpoint.
        self.check(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer)  # raising here leaves the previous checkpoint file untouched

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        if self.first_bad is None or int(self.first_bad) < 0:
            return
        step = int(self.first_bad)
        losses = ", ".join(f"{k}={v:g}" for k, v in zip(self.keys, self.bad_values.tolist()))
        ckpts = existing_checkpoints(trainer)
        raise UserError(
            f"Training diverged: non-finite loss at training step {step} "
            f"(epoch {trainer.current_epoch + 1}; {losses}). Training stopped; "
            + (f"the last good checkpoint is {ckpts[0]} (resume=PATH continues from it). " if ckpts
               else "no checkpoint had been written yet. ")
            + "Lower model.g_optimizer.lr / model.d_optimizer.lr, try model=spectral, "
            "or use trainer.precision=32-true if it ran in 16-mixed.")


def existing_checkpoints(trainer: Trainer) -> list[str]:
    """The checkpoint files the run has written that exist now. (A ModelCheckpoint names its new
    file before writing it, so a path it holds may not exist yet.)"""
    paths = []
    for c in trainer.checkpoint_callbacks:
        for path in (getattr(c, "last_model_path", ""), getattr(c, "best_model_path", "")):
            if path and Path(path).is_file() and path not in paths:
                paths.append(path)
    return paths


def grid_health(images: torch.Tensor) -> tuple[float, float]:
    """(share of saturated pixels, spread) of (N, 3, S, S) images in [-1, 1]: the share of values
    within 0.02 of -1 or 1, and the per-pixel std over the N images averaged over pixels (0: all
    N images are the same)."""
    images = images.float()
    return float((images.abs() > 0.98).float().mean()), float(images.std(dim=0).mean())


class DivergenceWatch(Callback):
    """Warns (action=warn) or stops the run (action=stop) when training has diverged or collapsed
    without a NaN:
      - D(x) > d_real_above and D(G(z)) < d_fake_below on every step of a stretch of
        saturation_steps training steps: D separates perfectly and G gets no gradient;
      - |D loss| or |G loss| above loss_limit: the losses exploded;
      - the fixed-latent grid at an epoch's end saturated (more than grid_saturated_share of its
        values at -1 or 1) or collapsed: its spread fell below grid_min_spread (near-identical
        images) after it had been 10x that. (A freshly initialised G draws near-identical images
        too; that is no collapse.)
    The defaults sit far outside healthy runs: late in the demo and vanilla runs D(x) is 0.7-0.97
    and D(G(z)) 0.03-0.5 (benchmarks/RESULTS.md), and losses stay below about 20.

    Like NonFiniteGuard, the per-step test keeps device-side flags read every check_every_n_steps
    steps; a stop raises before the epoch's grid and checkpoint are written.
    """

    def __init__(self, *, action: str = "warn", saturation_steps: int = 500, d_real_above: float = 0.999,
                 d_fake_below: float = 0.001, loss_limit: float = 1e4, grid_saturated_share: float = 0.95,
                 grid_min_spread: float = 0.005, check_every_n_steps: int = 50):
        if action not in ("warn", "stop"):
            raise UserError(f"callbacks.divergence.action={action!r} must be warn (log a warning and go on) "
                            "or stop (end the run with a message).")
        check_whole("callbacks.divergence.saturation_steps", saturation_steps, 1)
        check_whole("callbacks.divergence.check_every_n_steps", check_every_n_steps, 1)
        self.action, self.saturation_steps = action, saturation_steps
        self.d_real_above, self.d_fake_below, self.loss_limit = d_real_above, d_fake_below, loss_limit
        self.grid_saturated_share, self.grid_min_spread = grid_saturated_share, grid_min_spread
        self.check_every_n_steps = check_every_n_steps
        self.streak: torch.Tensor | None = None  # consecutive saturated steps so far
        self.saturated_at: torch.Tensor | None = None  # step at which a streak reached saturation_steps, or -1
        self.exploded_at: torch.Tensor | None = None  # first step with a loss above loss_limit, or -1
        self.exploded_loss: torch.Tensor | None = None
        self.reported: set[str] = set()
        self.peak_spread = 0.0  # the largest grid spread so far; kept in checkpoints

    def state_dict(self) -> dict:
        return {"peak_spread": self.peak_spread}

    def load_state_dict(self, state_dict: dict) -> None:
        self.peak_spread = state_dict.get("peak_spread", 0.0)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        if "train/D_x" not in metrics or "train/D_G_z1" not in metrics:
            return
        d_real, d_fake = metrics["train/D_x"].detach(), metrics["train/D_G_z1"].detach()
        losses = torch.stack([metrics[k].detach().float().reshape(()) for k in ("train/d_loss", "train/g_loss")
                              if k in metrics])
        if self.streak is None:
            self.streak = torch.zeros((), dtype=torch.long, device=d_real.device)
            self.saturated_at = torch.full_like(self.streak, -1)
            self.exploded_at = torch.full_like(self.streak, -1)
            self.exploded_loss = torch.zeros((), device=d_real.device)
        step = pl_module.steps_done
        saturated = (d_real > self.d_real_above) & (d_fake < self.d_fake_below)
        self.streak = torch.where(saturated, self.streak + 1, torch.zeros_like(self.streak))
        reached = (self.streak >= self.saturation_steps) & (self.saturated_at < 0)
        self.saturated_at = torch.where(reached, torch.full_like(self.streak, step), self.saturated_at)
        worst = losses.abs().max()
        exploded = (worst > self.loss_limit) & (self.exploded_at < 0)
        self.exploded_at = torch.where(exploded, torch.full_like(self.exploded_at, step), self.exploded_at)
        self.exploded_loss = torch.where(exploded, worst, self.exploded_loss)
        if step % self.check_every_n_steps == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)
        saturated, spread = grid_health(pl_module.sample(pl_module.fixed_z, pl_module.fixed_labels))
        where = f"at the end of epoch {trainer.current_epoch + 1} (training step {pl_module.steps_done})"
        if saturated > self.grid_saturated_share:
            self.report(trainer, "grid saturated", f"{saturated:.0%} of the fixed-latent grid's pixel values "
                        f"are at black or white {where}: G's output saturated")
        self.peak_spread = max(self.peak_spread, spread)
        if spread < self.grid_min_spread <= self.peak_spread / 10:
            self.report(trainer, "grid collapsed", f"the fixed-latent grid's images are near-identical {where} "
                        f"(spread {spread:.4f} < {self.grid_min_spread}, down from {self.peak_spread:.3f}): mode collapse")

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        if self.streak is None:
            return
        saturated_at, exploded_at = int(self.saturated_at), int(self.exploded_at)
        if saturated_at >= 0:
            self.report(trainer, "D saturated", f"D(x) > {self.d_real_above} and D(G(z)) < {self.d_fake_below} on "
                        f"every one of {self.saturation_steps} training steps up to step {saturated_at}: D separates "
                        "real from generated perfectly and G learns nothing")
        if exploded_at >= 0:
            self.report(trainer, "losses exploded", f"a loss reached {float(self.exploded_loss):.3g} at training "
                        f"step {exploded_at} (callbacks.divergence.loss_limit={self.loss_limit:g}): the losses exploded")

    def report(self, trainer: Trainer, kind: str, what: str) -> None:
        if kind in self.reported:
            return
        self.reported.add(kind)
        advice = ("Lower model.d_optimizer.lr and model.g_optimizer.lr, or try model=spectral; the "
                  "callbacks.divergence.* keys set what counts as diverged.")
        if self.action == "warn":
            if trainer.is_global_zero:
                log.warning("Training looks diverged: %s. It goes on (callbacks.divergence.action=stop ends "
                            "such a run). %s", what, advice)
            return
        ckpts = existing_checkpoints(trainer)
        raise UserError(f"Training diverged: {what}. Training stopped (callbacks.divergence.action=stop); "
                        + (f"the last checkpoint before it is {ckpts[0]}. " if ckpts
                           else "no checkpoint had been written yet. ") + advice)


def folder_deleted(run_dir: Path, steps_done: int, folder_id: tuple[int, int] | None = None) -> UserError:
    """The stop of a run whose folder, or whose lock in it, was removed while it trained. folder_id:
    the folder's (device, inode) as the run began: a folder of that name made anew since (a late write
    of a logger or a grid recreating it) is the deleted one too."""
    if not run_dir.is_dir() or (folder_id is not None and identity(run_dir) != folder_id):
        return UserError(f"The run folder {run_dir} was deleted while the run trained (after training step "
                         f"{steps_done}): its checkpoints, sample grids and TensorBoard events went with it, and the "
                         "run stopped, as it had nowhere left to save them. Nothing of the run is left to resume: "
                         "start it again.")
    return UserError(f"{run_dir / lock.LOCK_NAME} was removed (or taken by another process) while the run trained "
                     f"(after training step {steps_done}): another run may now write this folder, so this one "
                     "stopped. Its last checkpoint stays; resume=auto continues from it once no other process "
                     "writes the folder.")


class RunFolderWatch(Callback):
    """Stops the run at the end of the training step in which its folder was deleted (`rm -rf RUN`,
    a scratch purge), before a grid or checkpoint would recreate a part of it (atomic_write makes
    its folder): the run's lock is the mark that the folder is still the run's."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.folder_id = None
        # The folder stays open while the run trains: a folder made anew under its name after an
        # `rm -rf` (a logger's late write) cannot be given its inode, so the two never look the same.
        self._held = None
        if run_dir.is_dir():
            try:
                self._held = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except OSError:  # a system that opens no folders (Windows): the name's inode, unheld
                self.folder_id = identity(run_dir)
            else:
                stat = os.fstat(self._held)
                self.folder_id = stat.st_dev, stat.st_ino

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        if lock.lost(self.run_dir):
            raise folder_deleted(self.run_dir, pl_module.steps_done, self.folder_id)

    def __enter__(self) -> "RunFolderWatch":
        return self

    def __exit__(self, *exc) -> None:  # after the run's stop is explained: the folder is let go
        if self._held is not None:
            os.close(self._held)
            self._held = None


def identity(path: Path) -> tuple[int, int]:
    """A folder's (device, inode): the same name made anew is another folder."""
    stat = path.stat()
    return stat.st_dev, stat.st_ino
