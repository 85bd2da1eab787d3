"""The TensorBoard HParams table: one row per run, the settings researchers compare across runs and
the run's final losses and metrics."""
from collections.abc import Mapping
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger

from celebgan.data.modules import dataset_name

# HParams columns -> the logged metric whose last value fills them at the end of training.
FINAL_LOSSES = {
    "final/d_loss": "epoch/d_loss",
    "final/g_loss": "epoch/g_loss",
    "final/D_x": "epoch/D_x",
    "final/D_G_z1": "epoch/D_G_z1",
    "final/D_G_z2": "epoch/D_G_z2",
}
FINAL_QUALITY = {"final/fid": "metrics/fid", "final/kid": "metrics/kid"}


def final_metrics(config: Mapping[str, Any]) -> dict[str, str]:
    """The columns a run of `config` fills: FID and KID only when it measures them."""
    measures = config.get("metrics", {}).get("every_n_epochs", 0) > 0
    return {**FINAL_LOSSES, **(FINAL_QUALITY if measures else {})}


def _name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def run_hparams(config: Mapping[str, Any], choices: Mapping[str, Any]) -> dict[str, Any]:
    """The run's row: its presets (Hydra's group choices, when known) and the settings that tell
    runs apart. The whole config stays in RUN/.hydra/config.yaml and in every checkpoint."""
    model, data = config["model"], config["data"]
    return {
        "model": choices.get("model") or "",  # the preset: vanilla, high_lr, ...
        "data": choices.get("data") or dataset_name(data),
        "objective": _name(model["g_loss"]["_target_"]).removeprefix("g_"),
        "real_label": model["d_loss"].get("real_label", 1.0),
        "penalties": ",".join(sorted(model.get("penalties") or {})) or "none",
        "n_dis": model.get("n_dis", 1),
        "g_lr": model["g_optimizer"]["lr"],
        "d_lr": model["d_optimizer"]["lr"],
        "img_size": data["img_size"],
        "batch_size": data["batch_size"],
        "seed": config["seed"] if config.get("seed") is not None else -1,  # one type per column
    }


def log_hparams(logger: Logger, config: Mapping[str, Any], choices: Mapping[str, Any]) -> None:
    """Declare the run's row and its metric columns before training.

    The hparams summary names the metric columns and TensorBoard fills each with the last value
    logged under its tag: NaN (no value yet) now, the real value from FinalMetrics at the end.
    Declared up front, a run that stops early still has its row.
    """
    logger.log_hyperparams(run_hparams(config, choices), metrics={name: float("nan") for name in final_metrics(config)})


class FinalMetrics(Callback):
    """Fills the HParams metric columns with the last logged values when training ends (before
    Lightning closes the loggers, so the run keeps one event file), at the last training step."""

    def __init__(self, *, columns: Mapping[str, str]):
        self.columns = dict(columns)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = trainer.callback_metrics
        final = {name: float(metrics[key]) for name, key in self.columns.items() if key in metrics}
        for logger in trainer.loggers if final else []:
            logger.log_metrics(final, step=max(pl_module.steps_done - 1, 0))
