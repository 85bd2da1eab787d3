"""What celebgan relies on inside Lightning (and inside torch's TensorBoard writer), where no public
API does the job: the fit loop's saved state, the SIGTERM handler Lightning installs, the loggers
and wording of its lines, a deprecation its own code triggers, and the writer under
TensorBoardLogger. Nothing else in celebgan reaches past a public API.

tests/test_lightning_contract.py checks each against the installed Lightning and torch, one test
per name here, so an upgrade that changes one fails there, naming it, rather than in a run
(`make test-latest` runs it on the newest releases)."""
import logging
import signal
from collections.abc import Callable

# The fit loop's state as a checkpoint holds it: checkpoint["loops"]["fit_loop"], a dict of Lightning's
# progress counters (used by resume.ResumePosition and resume.check_epochs). No public API reads or
# corrects the position an epoch-end checkpoint resumes at.
EPOCH_PROGRESS = "epoch_progress"  # {"total"|"current": {"ready", "started", "processed", "completed"}}
BATCH_PROGRESS = "epoch_loop.batch_progress"  # also "is_last_batch"
LOADER_STATE = "combined_loader"  # under the fit loop's "state_dict": the training loader's state_dict()


def fit_loop_state(checkpoint: dict) -> dict | None:
    """The fit loop's saved state in a checkpoint (None in one Lightning wrote without it)."""
    return checkpoint.get("loops", {}).get("fit_loop")


def settle_epoch_end(fit_loop: dict) -> None:
    """Rewrites the fit loop's state (fit_loop_state) in place when it was saved at an epoch's end
    (the epoch processed; completed too when a signal stopped the run there): an epoch whose batches
    all ran is completed, and the next one starts at its first batch; one that max_steps cut short
    becomes unprocessed again, so it continues from its next batch and is counted once, when it
    ends. A checkpoint written mid-epoch is left as it is.

    Lightning saves an epoch-end checkpoint with the epoch processed but not yet completed, and
    resumes it correctly only without max_steps (resume.ResumePosition says what went wrong)."""
    epochs, batches = fit_loop[EPOCH_PROGRESS], fit_loop[BATCH_PROGRESS]
    processed = [epochs[k]["processed"] == epochs[k]["started"] for k in ("total", "current")]
    completed = [epochs[k]["completed"] == epochs[k]["processed"] for k in ("total", "current")]
    if not all(processed):
        return
    if batches["is_last_batch"]:  # also completed: a signal during an epoch's last batch saves there
        for k in ("total", "current"):
            epochs[k]["completed"] = epochs[k]["processed"]
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False
        fit_loop.get("state_dict", {}).pop(LOADER_STATE, None)  # its position is the ended epoch's
    elif not any(completed):
        for k in ("total", "current"):
            epochs[k]["processed"] -= 1


def epochs_completed(fit_loop: dict) -> int:
    """The epochs a settled fit loop state (settle_epoch_end) has completed."""
    return fit_loop[EPOCH_PROGRESS]["current"]["completed"]


def lightning_stop_handler() -> Callable | None:
    """The SIGTERM handler the Trainer installed for the fit (None outside one): called, it marks
    trainer.received_sigterm and Lightning's loop raises SIGTERMException after the training step
    under way, on every DDP rank (resume.SaveOnSignal hands its stop signals to it). Read in
    on_train_start, once Lightning has installed it; Lightning names no public way to ask for that
    stop (trainer.should_stop ends the epoch normally instead)."""
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


def lightning_owns_sigusr1() -> bool:
    """Whether the Trainer handles SIGUSR1 in this fit: Lightning installs a handler for it only
    under SLURM with auto-requeue (its SLURM plugin saves a checkpoint and requeues the job), so any
    handler at on_train_start is that one (resume.SaveOnSignal otherwise takes SIGUSR1 as SIGTERM)."""
    return signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL


# Lightning's lines that say nothing about a celebgan run, or say it wrong, and the loggers that
# write them (a logging filter applies to records of the logger it is added to, not to its children).
# Lightning has no switch for them: its tips (litlogger, litmodels), the counts of accelerators that
# are not here (TPU; the GPU line of a machine without one), the stop at `max_steps` in optimizer steps
# (the closing summary counts training steps), and "Received SIGTERM: 15" where resume.SaveOnSignal
# says which signal stops the run (Ctrl-C is one too).
NOISY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.signal_connector")
NOISE = {
    "tips": "💡 Tip",
    "no TPU": "TPU available",
    "no GPU": "GPU available: False",
    "max_steps stop": "`Trainer.fit` stopped: `max_steps=",
    "SIGTERM received": "Received SIGTERM",
}
RANK_PREFIX = "[rank: "  # rank_prefixed_message's: "[rank: 0] Received SIGTERM: 15"


class LightningNoise(logging.Filter):
    """Drops the lines of NOISE from the loggers it is added to (quiet_lightning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(RANK_PREFIX):
            message = message.split("] ", 1)[-1]
        return not message.startswith(tuple(NOISE.values()))


LIGHTNING_NOISE = LightningNoise()


def quiet_lightning() -> None:
    """Adds LightningNoise to Lightning's NOISY_LOGGERS (once: a logger holds a filter once)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).addFilter(LIGHTNING_NOISE)


# Lightning's combined loader builds torch's deprecated LeafSpec, and torch warns on each fit: nothing
# a user can act on. A regex of the warning's message, for warnings.filterwarnings.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def event_writer(logger):
    """The event-file writer under a TensorBoardLogger (torch's SummaryWriter's FileWriter), which
    takes the HParams plugin's raw summaries (hparams.log_hparams, SessionEnd): SummaryWriter writes
    those only through add_hparams, which starts a second run folder."""
    return logger.experiment._get_file_writer()
