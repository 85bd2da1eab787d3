"""The TensorBoard HParams table: one row per run, its config values and its final metrics."""
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger

# HParams columns -> the logged metric whose last value fills them at the end of training.
FINAL_METRICS = {
    "final/d_loss": "train/d_loss_epoch",
    "final/g_loss": "train/g_loss_epoch",
    "final/D_x": "train/D_x_epoch",
    "final/D_G_z1": "train/D_G_z1_epoch",
    "final/D_G_z2": "train/D_G_z2_epoch",
    "final/fid": "metrics/fid",
    "final/kid": "metrics/kid",
}


def log_hparams(logger: Logger, config: dict[str, Any]) -> None:
    """Declare the run's config and its metric columns before training.

    The hparams summary names the metric columns and TensorBoard fills each with the last value
    logged under its tag: NaN (no value yet) now, the real value from log_final_metrics at the end.
    Declared up front, a run that stops early still has its row.
    """
    logger.log_hyperparams(config, metrics={name: float("nan") for name in FINAL_METRICS})


class FinalMetrics(Callback):
    """Fills the HParams metric columns with the last logged values when training ends (before
    Lightning closes the loggers, so the run keeps one event file)."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = trainer.callback_metrics
        final = {name: float(metrics[key]) for name, key in FINAL_METRICS.items() if key in metrics}
        for logger in trainer.loggers if final else []:
            logger.log_metrics(final, step=trainer.global_step)
