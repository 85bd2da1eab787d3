"""Checks that stop a run with one clear message: device counts before it starts, non-finite losses
while it trains."""
import os

import torch
from lightning import Callback, LightningModule, Trainer

from celebgan.errors import UserError


def check_devices(accelerator: str, devices, sync_batchnorm: bool = False) -> None:
    """A device request this machine cannot meet fails here, before any data is read."""
    if sync_batchnorm and (accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())):
        raise UserError("trainer.sync_batchnorm=true needs GPUs: PyTorch's SyncBatchNorm does not run on CPU. "
                        "Drop it on CPU; each process then normalises with its own batch statistics.")
    if not isinstance(devices, int) and not (isinstance(devices, str) and devices.lstrip("-").isdigit()):
        return  # "auto" or a list of device ids: Lightning checks those itself
    devices = int(devices)
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0):
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
        raise UserError(f"trainer.devices={devices} CPU processes but this machine has {os.cpu_count()} cores.")


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

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer)  # raising here leaves the previous checkpoint file untouched

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        if self.first_bad is None or int(self.first_bad) < 0:
            return
        step = int(self.first_bad)
        losses = ", ".join(f"{k}={v:g}" for k, v in zip(self.keys, self.bad_values.tolist()))
        ckpt = next((c.last_model_path or c.best_model_path for c in trainer.checkpoint_callbacks
                     if getattr(c, "last_model_path", None) or getattr(c, "best_model_path", None)), None)
        raise UserError(
            f"Training diverged: non-finite loss at training step {step} "
            f"(epoch {trainer.current_epoch}; {losses}). Training stopped; "
            + (f"the last good checkpoint is {ckpt}. " if ckpt else "no checkpoint had been written yet. ")
            + "Lower model.g_optimizer.lr / model.d_optimizer.lr, try model=spectral, "
            "or use trainer.precision=32-true if it ran in 16-mixed.")
