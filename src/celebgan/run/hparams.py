"""What TensorBoard shows of a run: the logger, and the HParams table (one row per run: the settings
researchers compare across runs and the run's final losses and metrics)."""
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

from celebgan.data.modules import dataset_name
from celebgan.run.lightning_compat import event_writer


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar Lightning adds to every write, on one
    x-axis: training steps done, as the console counts them. Lightning passes the 0-based index of the
    step being logged (its epoch-end metrics: the epoch's last step); the point lies at index + 1, so a
    step's losses are at 1, 2, ... and an epoch of 312 steps ends at 312, as the console's "step 312"
    and that epoch's grid say."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, None if step is None else step + 1)


# The HParams metric columns, labelled final/NAME -> the logged curve whose last value fills them. In
# this order: TensorBoard shows the first five by default.
FINAL_QUALITY = {"final/fid": "metrics/fid", "final/kid": "metrics/kid"}
FINAL_LOSSES = {
    "final/d_loss": "train_epoch/d_loss",
    "final/g_loss": "train_epoch/g_loss",
    "final/D_x": "train_epoch/D_x",
    "final/D_G_z1": "train_epoch/D_G_z1",
    "final/D_G_z2": "train_epoch/D_G_z2",
}

# A sweep's key (as on the command line) -> the column that shows it.
COLUMN_OF_KEY = {
    "model/loss": "objective",
    "model/penalty": "penalties",
    "model.g_optimizer.lr": "g_lr",
    "model.d_optimizer.lr": "d_lr",
    "model.g_optimizer.betas.0": "g_beta1",
    "model.d_optimizer.betas.0": "d_beta1",
    "model.n_dis": "n_dis",
    "model.d_loss.real_label": "real_label",
    "data.img_size": "img_size",
    "data.batch_size": "batch_size",
}


def final_metrics(config: Mapping[str, Any]) -> dict[str, str]:
    """The metric columns of a run of `config`, in order: FID and KID first, and only when it
    measures them (a column that could only ever be empty would hide one that is not)."""
    measures = config.get("metrics", {}).get("every_n_epochs", 0) > 0
    return {**(FINAL_QUALITY if measures else {}), **FINAL_LOSSES}


def _name(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def _select(config: Mapping[str, Any], key: str) -> Any:
    """config's value at a command line's dotted key (`model.g_optimizer.betas.0`); None if absent."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        else:
            return None
    return node


def _plain(value: Any) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def run_hparams(config: Mapping[str, Any], choices: Mapping[str, Any],
                swept: Sequence[str] = ()) -> dict[str, Any]:
    """The run's row, in the order a researcher compares runs: the preset (Hydra's group choice,
    when known) and the main knobs, any other key its sweep varies (a column named by that key, such
    as `model.penalties.r1.gamma` of search=optuna), then the rest of what tells runs apart. The
    whole config stays in RUN/.hydra/config.yaml and in every checkpoint."""
    model, data = config["model"], config["data"]
    main = {
        "model": choices.get("model") or "",  # the preset: vanilla, high_lr, ...
        "objective": _name(model["g_loss"]["_target_"]).removeprefix("g_"),
        "penalties": ",".join(sorted(model.get("penalties") or {})) or "none",
        "g_lr": model["g_optimizer"]["lr"],
        "d_lr": model["d_optimizer"]["lr"],
        "g_beta1": model["g_optimizer"].get("betas", [0.9])[0],  # Adam's default when unset
        "d_beta1": model["d_optimizer"].get("betas", [0.9])[0],
    }
    rest = {
        "n_dis": model.get("n_dis", 1),
        "real_label": model["d_loss"].get("real_label", 1.0),
        "data": choices.get("data") or dataset_name(data),
        "img_size": data["img_size"],
        "batch_size": data["batch_size"],
        "seed": config["seed"] if config.get("seed") is not None else -1,  # one type per column
    }
    other = sorted(key for key in set(swept) - main.keys() - rest.keys() if key not in COLUMN_OF_KEY)
    swept_values = {key: _plain(choices[key] if key in choices else _select(config, key)) for key in other}
    return main | swept_values | rest


# Each column's place: the sweep's other keys (place 7) come between the main knobs and the rest.
PLACE = {label: i for i, label in enumerate(
    ["model", "objective", "penalties", "g_lr", "d_lr", "g_beta1", "d_beta1", "", "n_dis", "real_label", "data",
     "img_size", "batch_size", "seed"])}


def column_id(label: str) -> str:
    """A column's id in TensorBoard, which sorts the columns by id (those of differing values first)
    whatever order they are declared in: the id leads with the column's place (`03_g_lr`), the same
    in every run, so runs of different sweeps fill the same columns."""
    return f"{PLACE.get(label, PLACE['']):02d}_{label}"


def _type(value: Any) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, (int, float)) else api_pb2.DATA_TYPE_STRING


def _summary(tag: str, data: HParamsPluginData) -> Summary:
    """An hparams plugin summary, as torch.utils.tensorboard writes them (TensorBoard's own helpers
    need TensorFlow)."""
    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def experiment(row: Mapping[str, Any], varied: Sequence[str], metrics: Mapping[str, str]) -> Summary:
    """The HParams table's columns, as TensorBoard's hparams plugin reads them: ids in column order,
    labelled with the row's names. TensorBoard puts the columns whose values differ first and shows
    the first five hparams and five metrics: the sweep's `varied` columns are those (a single run's
    are none, so its first five show)."""
    hparams = [api_pb2.HParamInfo(name=column_id(label), display_name=label, type=_type(value),
                                  differs=label in varied) for label, value in row.items()]
    columns = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label)
               for label, tag in metrics.items()]
    return _summary(metadata.EXPERIMENT_TAG, HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=hparams, metric_infos=columns, time_created_secs=time.time())))


def session_start(row: Mapping[str, Any]) -> Summary:
    """The run's values of the columns."""
    start = SessionStartInfo(start_time_secs=time.time())
    for label, value in row.items():
        cell = start.hparams[column_id(label)]
        if isinstance(value, bool):
            cell.bool_value = value
        elif isinstance(value, (int, float)):
            cell.number_value = value
        else:
            cell.string_value = str(value)
    return _summary(metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=start))


def varied_columns(swept: Sequence[str]) -> list[str]:
    """The columns whose values a sweep of `swept` keys varies."""
    return [COLUMN_OF_KEY.get(key, key) for key in swept]


@rank_zero_only
def log_hparams(logger: Logger, config: Mapping[str, Any], choices: Mapping[str, Any],
                swept: Sequence[str] = ()) -> None:
    """Declare the run's row and its columns before training: a run that stops early still has its
    row. The metric columns are the run's own curves (their last values), so no value is logged
    for them now: the row's metric cells fill as training logs them. hparams.yaml gets the row too."""
    row = run_hparams(config, choices, swept)
    logger.log_hyperparams(row)  # hparams.yaml only: the logger's default_hp_metric is off
    if isinstance(logger, TensorBoardLogger):
        writer = event_writer(logger)
        writer.add_summary(experiment(row, varied_columns(swept), final_metrics(config)))
        writer.add_summary(session_start(row))
        writer.flush()


class SessionEnd(Callback):
    """Marks the run's HParams row as finished when training ends (before Lightning closes the
    loggers, so the run keeps one event file); a run stopped on the way stays without a status."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for logger in trainer.loggers if trainer.is_global_zero else []:
            if isinstance(logger, TensorBoardLogger):
                end = SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
                event_writer(logger).add_summary(
                    _summary(metadata.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=end)))
