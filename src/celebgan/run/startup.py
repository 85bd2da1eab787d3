"""A run that never trained leaves no run folder, however it ends.

Before its first training step a run folder holds only what start-up writes (Hydra's .hydra and log,
the logger's declaration of the run): removing it loses nothing, and keeping it would leave a run
with no data in TensorBoard and a folder that resume=auto passes over. Three ways to end before a
step each get their cleanup:
- an error or Ctrl-C: train.removed_if_unused, on the way out;
- a stop signal (SIGTERM, SIGHUP, SIGXCPU, SIGUSR1), whose default would kill the process on the
  spot: `guard` turns it into SystemExit(128 + signum), so the same way out runs; once training runs,
  resume.SaveOnSignal handles them instead (save, then exit);
- SIGKILL (the out-of-memory killer, a scheduler out of patience), which nothing can catch: the
  next run started beside it removes the folder (lock.remove_abandoned), its lock naming a process
  gone.

SIGQUIT (Ctrl-\\) keeps Python's default, an immediate stop with a core dump and nothing saved: it
is the way out of a run that hangs (in a collective operation, in a save), which a handler written
in Python could not serve, since it runs only between bytecodes of the main thread. The next run
removes its folder if it never trained, and takes over its lock otherwise.
"""
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# SIGTERM: the stop of SLURM (scancel, the time limit), Kubernetes and `kill`. SIGHUP: the terminal or
# ssh session that started the run closed. SIGXCPU: the CPU-time limit (ulimit -t, a scheduler's),
# sent before SIGKILL. SIGUSR1: SLURM's warning before the time limit (--signal).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGXCPU, signal.SIGUSR1)


class Stopped(SystemExit):
    """A stop signal outside training: the command ends as SystemExit(128 + signum) would, so every
    `finally` and context manager on the way out runs (the lock's release, removed_if_unused)."""

    def __init__(self, signum: int):
        super().__init__(128 + (signal.SIGTERM if signum == signal.SIGUSR1 else signum))  # USR1 counts as TERM
        self.signum = signum


class _Phase:
    training = False  # from the fit's first training hook to its teardown: SaveOnSignal's time
    trained = False  # after that teardown


def guard(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _Phase.trained:
        log.warning("%s after training ended: stopping; the run's checkpoints are written.", name)
        raise Stopped(signum)
    if not _Phase.training:
        log.warning("%s before the run's first training step: stopping. Nothing was trained, so nothing is saved; "
                    "start the run again.", name)
        raise Stopped(signum)
    # Training: SaveOnSignal stands in front of this for every stop signal. Reached through
    # Lightning's own SIGTERM handler (which calls the one it found) it has nothing to add; any
    # other signal reaching it (SaveOnSignal left out of the callbacks) stops as SIGTERM does.
    if signum != signal.SIGTERM:
        signal.raise_signal(signal.SIGTERM)


def install_guard() -> None:
    """Sets `guard` for every stop signal still at its default (a launcher's or a user's own
    handler is left alone). Called as soon as a command has its run folder, and again per job."""
    _Phase.training = _Phase.trained = False  # a --multirun sweep's next job starts again
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, guard)


@contextmanager
def guarded() -> Iterator[None]:
    """install_guard for the block (a command's job); after it the signals get their defaults back,
    for a process that goes on (a --multirun sweep between jobs, a caller of the command's function)."""
    install_guard()
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is guard:
                    signal.signal(signum, signal.SIG_DFL)


def hand_over() -> None:
    """Just before the Trainer takes the signals: SIGUSR1 goes back to its default, so Lightning's
    SLURM plugin (auto-requeue) can claim it, as it claims only an unclaimed signal; SaveOnSignal
    takes it otherwise."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGUSR1) is guard:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def training(active: bool) -> None:
    """resume.TrainingPhase marks the fit's training (its first training hook to its teardown)."""
    _Phase.training, _Phase.trained = active, not active


def holds_only_startup_files(run_dir: Path, log_name: str, also: tuple[str, ...] = ()) -> bool:
    """run_dir holds only what a run writes before its first training step: .hydra, the log, and
    the logger's hparams.yaml and event files with no step's value in them (and the names in `also`)."""
    allowed = (".hydra", log_name, "hparams.yaml", *also)
    names = [p.name for p in run_dir.iterdir()]
    if not all(n in allowed or n.startswith("events.out.tfevents.") for n in names):
        return False
    return not any(n.startswith("events.out.tfevents.") for n in names) or logs_no_step(run_dir)


def logs_no_step(run_dir: Path) -> bool:
    """The event files in run_dir hold the HParams declaration alone: no image and no scalar
    (hparams.log_hparams declares the metric columns without a value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    reader_log = logging.getLogger("tensorboard")
    level = reader_log.level
    reader_log.setLevel(logging.WARNING)  # its "No path found after ..." at the end of every file
    try:
        events.Reload()
    finally:
        reader_log.setLevel(level)
    tags = events.Tags()
    return not any(tags.get(kind) for kind in ("scalars", "images", "audio", "histograms", "distributions", "tensors"))
