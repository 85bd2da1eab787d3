"""What celebgan relies on inside Lightning (celebgan.run.lightning_compat), each still there and still
behaving as relied on, checked on a tiny fit: an upgrade of Lightning or torch that changes one fails
here, naming it and the code that uses it, instead of surfacing in a run as a wrong resume position, a
stop that saves nothing, or lines the console should not show."""
import logging
import os
import re
import signal
import warnings

import lightning
import pytest
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from celebgan.run import lightning_compat as compat
from celebgan.run.callbacks import PlainModelSummary

BATCHES = 4  # an epoch of the tiny fit


def changed(name: str, where: str, todo: str, owner: str = "lightning") -> str:
    version = lightning.__version__ if owner == "lightning" else torch.__version__
    return f"celebgan relies on {owner}'s {name} (used by {where}); {owner} {version} changed it: {todo}"


class Tiny(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StatefulLoader(DataLoader):
    """A loader Lightning saves with its loops, as celebgan's ResumableLoader is."""

    def state_dict(self) -> dict:
        return {"batches_done": 0}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


def tiny_fit(tmp_path, *, callbacks=(), max_steps: int = 2, **trainer_kwargs) -> Trainer:
    trainer = Trainer(**{"default_root_dir": tmp_path, "accelerator": "cpu", "devices": 1, "logger": False,
                         "max_steps": max_steps, "enable_progress_bar": False, "enable_model_summary": False,
                         "enable_checkpointing": False, "callbacks": list(callbacks), **trainer_kwargs})
    trainer.fit(Tiny(), StatefulLoader(torch.randn(2 * BATCHES, 2), batch_size=2))
    return trainer


@pytest.fixture
def lightning_lines():
    """Every record of lightning_compat.NOISY_LOGGERS during a test, unfiltered (train's quiet_lightning
    may have added LightningNoise to them in this process)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, loggers = Keep(level=logging.DEBUG), [logging.getLogger(n) for n in compat.NOISY_LOGGERS]
    filtered = [logger for logger in loggers if compat.LIGHTNING_NOISE in logger.filters]
    for logger in loggers:
        logger.removeFilter(compat.LIGHTNING_NOISE)
        logger.addHandler(handler)
    yield records
    for logger in loggers:
        logger.removeHandler(handler)
    for logger in filtered:
        logger.addFilter(compat.LIGHTNING_NOISE)


def noise_lines(records, what: str) -> list[logging.LogRecord]:
    """The records of NOISE[what], after Lightning's rank prefix."""
    def text(record):
        message = record.getMessage()
        return message.split("] ", 1)[-1] if message.startswith(compat.RANK_PREFIX) else message
    return [r for r in records if text(r).startswith(compat.NOISE[what])]


def test_the_fit_loop_state_of_an_epoch_end_checkpoint_is_what_settle_epoch_end_rewrites(tmp_path):
    # 1.5 epochs: one checkpoint at the first epoch's end, one at the end of the epoch max_steps cut short.
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    tiny_fit(tmp_path, callbacks=[saver], max_steps=BATCHES + BATCHES // 2, enable_checkpointing=True)
    name = ("fit loop state in a checkpoint, checkpoint['loops']['fit_loop'] (epoch_progress, "
            "epoch_loop.batch_progress, state_dict.combined_loader)")
    where = "lightning_compat.settle_epoch_end: resume.ResumePosition and resume.check_epochs"
    todo = ("read how Lightning now saves and restores an epoch-end checkpoint, make settle_epoch_end match "
            "(or remove it if Lightning resumes one correctly under max_steps), and run tests/test_resume.py.")
    states = {}
    for epoch in (0, 1):
        checkpoint = torch.load(tmp_path / "ckpt" / f"epoch={epoch}.ckpt", weights_only=False)
        fit_loop = compat.fit_loop_state(checkpoint)
        assert fit_loop is not None, changed(name, where, todo)
        try:
            epochs, batches = fit_loop[compat.EPOCH_PROGRESS], fit_loop[compat.BATCH_PROGRESS]
            states[epoch] = ({k: dict(epochs[k]) for k in ("total", "current")}, batches["is_last_batch"],
                             dict(batches["current"]), compat.LOADER_STATE in fit_loop["state_dict"])
        except (KeyError, TypeError) as err:
            pytest.fail(changed(name, where, f"{err!r} is gone; {todo}"))
        counters = {"ready", "started", "processed", "completed"}
        assert set(epochs["current"]) == counters and set(batches["current"]) == counters, changed(name, where, todo)
        assert fit_loop["state_dict"][compat.LOADER_STATE] == [{"batches_done": 0}], changed(name, where, todo)
        compat.settle_epoch_end(fit_loop)
        states[epoch] += (compat.epochs_completed(fit_loop), epochs["current"]["processed"],
                          compat.LOADER_STATE in fit_loop["state_dict"], dict(batches["current"]))
    # Saved at an epoch's end: processed but not completed, the last batch's; settled, completed.
    full = {"ready": 1, "started": 1, "processed": 1, "completed": 0}
    assert states[0][:4] == ({"total": full, "current": full}, True, dict.fromkeys(full, BATCHES), True), \
        changed(name, where, f"the first epoch's end is saved as {states[0][:4]}; {todo}")
    assert states[0][4:] == (1, 1, False, dict.fromkeys(full, 0)), changed(name, where, todo)
    # Cut short by max_steps: processed, not completed, not its last batch; settled, unprocessed again.
    cut = {"ready": 2, "started": 2, "processed": 2, "completed": 1}
    assert states[1][:4] == ({"total": cut, "current": cut}, False, dict.fromkeys(cut, BATCHES // 2), True), \
        changed(name, where, f"the end of an epoch max_steps cut short is saved as {states[1][:4]}; {todo}")
    assert states[1][4:7] == (1, 1, True), changed(name, where, todo)


def test_the_sigterm_handler_lightning_installs_stops_the_fit_after_the_step_under_way(tmp_path, monkeypatch,
                                                                                       lightning_lines):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    seen = {}

    class Stop(Callback):
        def on_train_start(self, trainer, pl_module):
            seen["handler"], seen["sigusr1"] = compat.lightning_stop_handler(), compat.lightning_owns_sigusr1()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1 and seen["handler"] is not None:
                seen["handler"](signal.SIGTERM, None)  # as resume.SaveOnSignal hands a stop signal on

        def on_exception(self, trainer, pl_module, exception):
            seen["exception"] = exception

    where = "lightning_compat.lightning_stop_handler: resume.SaveOnSignal"
    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, max_steps=20,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      callbacks=[Stop()])
    try:
        trainer.fit(Tiny(), StatefulLoader(torch.randn(2 * BATCHES, 2), batch_size=2))
        raised = None
    except SIGTERMException as err:
        raised = err
    assert seen["handler"] is not None and seen["handler"] != before, changed(
        "SIGTERM handler, installed by on_train_start", where,
        "find how Lightning now stops a fit after the step under way on a signal, on every rank, and hand "
        "SaveOnSignal's signals to that.")
    assert raised is not None and trainer.received_sigterm and trainer.global_step == 2, changed(
        "stop on SIGTERM after the training step under way (SIGTERMException)", where,
        f"fit raised {raised!r}, received_sigterm={trainer.received_sigterm}, stopped after {trainer.global_step} steps, not 2; "
        "SaveOnSignal must stop between two steps.")
    assert isinstance(seen.get("exception"), SIGTERMException), changed(
        "on_exception hook with SIGTERMException", "resume.SaveOnSignal.on_exception, which saves last.ckpt",
        f"the callbacks saw {seen.get('exception')!r}; save the stopped run's checkpoint where Lightning now lets one.")
    assert not seen["sigusr1"], changed(
        "SIGUSR1 handler, installed only under SLURM with auto-requeue", "lightning_compat.lightning_owns_sigusr1",
        "Lightning now handles SIGUSR1 outside SLURM: find out when, and when SaveOnSignal may take it.")
    assert signal.getsignal(signal.SIGTERM) == before, changed(
        "restoring the SIGTERM handler after a fit", "resume.SaveOnSignal.teardown", "restore it in SaveOnSignal.")
    assert noise_lines(lightning_lines, "SIGTERM received"), changed(
        "'Received SIGTERM' line of its signal connector's logger", "lightning_compat.NOISE and NOISY_LOGGERS",
        "update NOISE['SIGTERM received'] or NOISY_LOGGERS to what Lightning now logs, where it logs it.")


def test_lightnings_lines_that_celebgan_drops_come_from_the_loggers_it_filters(tmp_path, lightning_lines):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_fit(tmp_path, max_steps=2)
    where, todo = "lightning_compat.NOISE and NOISY_LOGGERS: train.hydra_main's quiet_lightning", \
        "update NOISE[{what!r}] and NOISY_LOGGERS to what Lightning now logs and where, or remove it if it no longer does."
    expected = ["tips", "no TPU", "max_steps stop"]
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        expected.append("no GPU")
    for what in expected:
        lines = noise_lines(lightning_lines, what)
        assert lines, changed(f"line {compat.NOISE[what]!r}...", where, todo.format(what=what))
        assert not any(compat.LIGHTNING_NOISE.filter(r) for r in lines), changed(
            f"line {compat.NOISE[what]!r}...", where, "LightningNoise no longer drops it: " + todo.format(what=what))
    # Every line it drops is one of those: the rest (the seed, restoring a checkpoint) still shows.
    kept = [r.getMessage() for r in lightning_lines if compat.LIGHTNING_NOISE.filter(r)]
    assert not any(m.startswith(tuple(compat.NOISE.values())) for m in kept), kept
    assert any(re.search(compat.LEAFSPEC_WARNING, str(w.message)) for w in caught), changed(
        "use of torch's deprecated LeafSpec (its combined loader warns on every fit)",
        "lightning_compat.LEAFSPEC_WARNING: train.hydra_main's warnings filter",
        "the warning is gone or reworded: remove LEAFSPEC_WARNING and its filter, or match the new words.")


def test_plain_model_summary_receives_what_summarize_takes(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="celebgan.run.callbacks"):
        trainer = tiny_fit(tmp_path, callbacks=[PlainModelSummary()])
    tables = [r.getMessage() for r in caplog.records if r.name == "celebgan.run.callbacks" and "| Name" in r.getMessage()]
    todo = "draw PlainModelSummary's table from what ModelSummary.summarize is now handed."
    assert len(tables) == 1, changed("ModelSummary.summarize (its arguments)", "run.callbacks.PlainModelSummary", todo)
    assert re.search(r"\n0 \| layer \| Linear \| 3      \| train\n", tables[0]), tables[0]
    assert "FLOPs" not in tables[0] and tables[0].endswith("Modules in eval mode"), tables[0]
    # enable_model_summary=False (train.build): Lightning adds no summary of its own beside it.
    assert sum(isinstance(c, ModelSummary) for c in trainer.callbacks) == 1, changed(
        "enable_model_summary=False with a ModelSummary callback given", "train.build", "keep one summary.")


def test_the_writer_under_a_tensorboard_logger_takes_raw_summaries(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary

    logger = TensorBoardLogger(tmp_path, name="run", version=0, default_hp_metric=False)
    where = "lightning_compat.event_writer: hparams.log_hparams and hparams.SessionEnd"
    try:
        writer = compat.event_writer(logger)
        writer.add_summary(Summary(value=[Summary.Value(tag="contract", simple_value=1.0)]))
        writer.flush()
    except AttributeError as err:
        pytest.fail(changed("SummaryWriter._get_file_writer", where, f"{err}; find the writer of raw summaries "
                            "under torch's SummaryWriter.", owner="torch"))
    assert any((tmp_path / "run" / "version_0").glob("events.out.tfevents.*")), changed(
        "SummaryWriter._get_file_writer", where, "its summaries reach no event file.", owner="torch")
