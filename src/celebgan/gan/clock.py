"""The run's one clock: the training step, one real batch (one D step, and a G step on every
n_dis-th). Everything that says how far a run has come or how long it lasts reads it:

- run length: `trainer.max_steps` counts training steps; `trainer.max_epochs` is that many epochs'
  steps (`run_steps` takes whichever ends the run first);
- schedules: the learning-rate schedulers step once per training step (`lr_schedule=linear` decays
  over `run_steps`), instance noise anneals over `model.instance_noise_steps`, lazy penalties run on
  every `every`-th step;
- images: the training steps times the images of one step (`images`): the EMA's half-life and ramp-up
  (StyleGAN's `ema_kimg`, so a half-life means the same at any batch size) and the kimg of the
  progress lines;
- cadences: an epoch is a fixed span of steps (the loader drops its last partial batch), so epoch e
  ends at step e x `steps_per_epoch`; the grids, FID/KID and `last.ckpt` are written there, where
  the loader reshuffles and Lightning's epoch-end hooks run (`epochs_to_run` counts them ahead);
- resume: Lightning restores its counters, and the steps are read back from them.

Lightning counts optimizer steps (`global_step`, its `max_steps`): a D step per training step plus a
G step on every n_dis-th, so b + b // n_dis after b training steps. `optimizer_steps` and its exact
inverse `training_steps` are the only conversions between the two; nothing else converts.
"""
import math


def optimizer_steps(steps: int, n_dis: int) -> int:
    """Lightning's global_step after `steps` training steps: what trainer.max_steps must be for
    the run to stop after exactly that many real batches."""
    return steps + steps // n_dis


def training_steps(optimizer_steps: int, n_dis: int) -> int:
    """The training steps behind Lightning's `optimizer_steps`: optimizer_steps' exact inverse."""
    return optimizer_steps - optimizer_steps // (n_dis + 1)


def images(steps: int, step_images: int) -> int:
    """The images a run has trained on after `steps` training steps of `step_images` real images
    each (the batch times the processes)."""
    return steps * step_images


def steps_per_epoch(trainer) -> int | None:
    """Training steps in one epoch (the Trainer's training batches, once it has its training data),
    or None when an epoch has no fixed length."""
    per_epoch = trainer.num_training_batches
    return None if per_epoch in (None, 0, math.inf) else int(per_epoch)


def run_steps(trainer, n_dis: int) -> int | None:
    """The training steps the whole run ends after (trainer.max_steps or max_epochs, whichever
    comes first), or None when neither limits it."""
    limits = []
    if trainer.max_steps not in (None, -1):
        limits.append(training_steps(trainer.max_steps, n_dis))
    per_epoch = steps_per_epoch(trainer)
    if trainer.max_epochs not in (None, -1) and per_epoch is not None:
        limits.append(trainer.max_epochs * per_epoch)
    return min(limits) if limits else None


def epochs_to_run(trainer, n_dis: int, per_epoch: int | None = None) -> int:
    """The epochs this fit will end (at least 1), as far as max_epochs and max_steps tell before it
    starts; per_epoch: the training steps of an epoch when the Trainer does not know them yet."""
    max_epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
    if trainer.max_steps not in (None, -1):
        per_epoch = steps_per_epoch(trainer) or per_epoch or 1
        max_epochs = min(max_epochs, math.ceil(training_steps(trainer.max_steps, n_dis) / per_epoch))
    return int(max(max_epochs - trainer.current_epoch, 1)) if max_epochs != math.inf else 1
