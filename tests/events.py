"""What a run logged to TensorBoard, read back from its event files: the one reader of the tests."""
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata


def events(logdir: Path | str) -> EventAccumulator:
    """Every scalar and image of the event files in logdir (by default TensorBoard keeps a sample)."""
    return EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0}).Reload()


def scalars(logdir: Path | str, tag: str) -> list:
    """The ScalarEvents (wall_time, step, value) of tag in logging order; [] when it was never logged.
    Sorted by wall time: the reader takes a folder's event files in name order, and two files one
    process wrote in the same second sort by its file counter as text ("...10" before "...9")."""
    acc = events(logdir)
    return sorted(acc.Scalars(tag), key=lambda e: e.wall_time) if tag in acc.Tags()["scalars"] else []


def scalar_steps(logdir: Path | str, tag: str) -> list[int]:
    return sorted(e.step for e in scalars(logdir, tag))


def hparams(logdir: Path | str) -> tuple[list, dict]:
    """The run's HParams declaration: its columns (HParamInfos, as declared) and its row {label: value}."""
    content = events(logdir).PluginTagToContent(metadata.PLUGIN_NAME)
    infos = list(metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG]).hparam_infos)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    label = {info.name: info.display_name for info in infos}
    row = {label[name]: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
           for name, value in start.hparams.items()}
    return infos, row
