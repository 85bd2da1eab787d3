"""Continuing a run exactly: which checkpoint to resume (`resume=PATH` or `resume=auto`), whether it
fits the current config, and the RNG streams that Lightning does not save."""
import copy
import logging
import os
import random
import signal
import threading
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from celebgan.run import startup
from celebgan.run.lightning_compat import (epochs_completed, fit_loop_state, lightning_owns_sigusr1,
                                           lightning_stop_handler, settle_epoch_end)
from celebgan.run.checkpoint import CONFIG_KEY, RESUME_HINT, as_given, read_checkpoint, run_dir
from celebgan.errors import UserError
from celebgan.gan.module import conditional_config
from celebgan.run.trust import UntrustedCheckpoint

log = logging.getLogger(__name__)

# Keys that may differ between a checkpoint and the run resuming it: where the data lives and how
# it is loaded change nothing in what is trained.
LOADING_KEYS = {"data.root", "data.num_workers", "data.pin_memory"}


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(saved: dict, current: dict, sections: tuple[str, ...]) -> list[str]:
    """`key: saved -> current` for each key under `sections` that differs (dotted keys)."""
    saved = {k: v for k, v in _flatten(saved).items() if k.split(".")[0] in sections or k in sections}
    current = {k: v for k, v in _flatten(current).items() if k.split(".")[0] in sections or k in sections}
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(saved.keys() | current.keys())
            if k not in LOADING_KEYS and saved.get(k) != current.get(k)]


def _stored_config(path: str | Path) -> dict:
    """The run config that the checkpoint at `path` stores, checked as data (checkpoint.read_checkpoint)."""
    return read_checkpoint(path, arg="resume", hint=RESUME_HINT)[CONFIG_KEY]


def as_composed(saved: dict, current: dict) -> dict:
    """The stored config compared with a composed one: a conditional run stores the attributes its data
    module chose, which data.attributes=null (all the data has) names only once the data is read;
    check_attributes compares those after the build."""
    data = saved.get("data")
    if not (isinstance(data, dict) and isinstance(data.get("attributes"), list)
            and (current.get("data") or {}).get("attributes") is None and conditional_config(saved.get("model") or {})):
        return saved
    return {**saved, "data": {**data, "attributes": None}}


def check_attributes(path: str | Path, saved: dict, config: dict) -> None:
    """A conditional run resumes only on the attributes it was trained on, as its data module chose them."""
    stored, now = (saved.get("data") or {}).get("attributes"), config["data"].get("attributes")
    if conditional_config(saved.get("model") or {}) and isinstance(stored, list) and stored != now:
        raise UserError(f"resume={str(path)!r} belongs to a different model, image size or data.attributes:\n"
                        f"  data.attributes: {stored!r} -> {now!r}\nResume with data.attributes=[{','.join(stored)}], "
                        "or start a new run without resume.")


def check_compatible(path: str | Path, saved: dict, current: dict) -> None:
    """A checkpoint resumes only into the model, image size and attributes it was trained with."""
    diffs = differences(as_composed(saved, current), current, ("model", "data.img_size", "data.attributes"))
    if diffs:
        raise UserError(
            f"resume={str(path)!r} belongs to a different model, image size or data.attributes:\n  " + "\n  ".join(diffs[:10])
            + "\nResume with the checkpoint's own settings (its run's .hydra/overrides.yaml), "
            "or start a new run without resume.")


def check_batch_size(path: str | Path, saved: dict, current: dict) -> None:
    """A run keeps its data.batch_size: the step is its unit of progress (max_steps, the penalty and
    noise schedules, the x-axis of its curves), the EMA half-life and the learning rates were set for
    that many images a step, and a checkpoint saved mid-epoch holds its position in batches."""
    saved_size, current_size = images_per_step(saved), images_per_step(current)
    if saved_size is not None and saved_size != current_size:
        def said(config: dict) -> str:
            processes = (images_per_step(config) or 0) // max(config.get("data", {}).get("batch_size") or 1, 1)
            size = config.get("data", {}).get("batch_size")
            return f"data.batch_size={size}" + (f" on {processes} processes" if processes > 1 else "")
        raise UserError(
            f"resume={str(path)!r} trained with {said(saved)} ({saved_size} images a step), and this run asks for "
            f"{said(current)} ({current_size}): that would change the images per training step in the middle of "
            f"the run (its step counts, EMA half-life and learning rates are set for {saved_size}, and its "
            f"position in the epoch is counted in such steps). Resume with {saved_size} images a step "
            f"(data.batch_size x trainer.devices x trainer.num_nodes), or start a new run without resume.")


def images_per_step(config: dict) -> int | None:
    """Images of one training step over all processes: data.batch_size x trainer.devices x num_nodes
    (a DDP run's per-process batch; devices given as a count, else one process)."""
    size = config.get("data", {}).get("batch_size")
    if not isinstance(size, int):
        return None
    trainer = config.get("trainer", {}) or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    return size * (devices if isinstance(devices, int) and devices > 0 else 1) * (nodes if isinstance(nodes, int) and nodes > 0 else 1)


def is_same_run(saved: dict, current: dict) -> bool:
    """resume=auto's notion of the same config: same model, same data (up to where it is stored and how
    it is loaded) and same seed. Trainer settings (max_epochs, devices, precision) may change."""
    return not differences(as_composed(saved, current), current, ("model", "data", "seed"))


def run_checkpoints(run: Path) -> list[Path]:
    """RUN/checkpoints/*.ckpt in the order resume=auto tries them: last.ckpt (the end of the newest
    epoch, or where a signal stopped it), best.ckpt (the lowest FID), then any other, newest first."""
    rank = {"last.ckpt": 0, "best.ckpt": 1}
    return sorted((run / "checkpoints").glob("*.ckpt"), key=lambda p: (rank.get(p.name, 2), -p.stat().st_mtime))


def find_latest(runs_root: Path, current: dict, exclude: Path | None = None) -> tuple[Path | None, list[str]]:
    """(the checkpoint resume=auto continues, why it passed over each damaged one).

    Of the newest run under runs_root (by its newest checkpoint) whose config is the same run's,
    the first readable checkpoint of run_checkpoints: a damaged last.ckpt falls back to that run's
    best.ckpt rather than to an older run. A run of another config is passed over silently. An
    untrusted file stops the search: it is not a damaged run of this user's to skip."""
    runs = {path.parents[1] for path in runs_root.glob("*/checkpoints/*.ckpt")} - {exclude}
    newest_first = sorted(runs, key=lambda run: max(p.stat().st_mtime for p in run_checkpoints(run)), reverse=True)
    skipped = []
    for run in newest_first:
        for path in run_checkpoints(run):
            try:
                saved = _stored_config(path)
            except UntrustedCheckpoint:
                raise
            except UserError as err:
                skipped.append(str(err))
                continue
            if is_same_run(saved, current):
                return path, skipped
            break  # every checkpoint of a run holds that run's config
    return None, skipped


def resolve(resume: str | None, config: dict) -> tuple[str | None, Path | None, dict | None]:
    """(checkpoint to resume or None, run directory to continue in or None, its stored run config or
    None) for `resume`.

    Runs before any data is read, so a wrong path or model fails at once. `config` is the resolved
    current config; runs are looked for next to its run directory (outputs/runs/)."""
    if resume in (None, ""):
        return None, None, None
    this_run = Path(config["paths"]["output_dir"])
    if resume == "auto":
        path, skipped = find_latest(this_run.parent, config, exclude=this_run)
        taken = (f"continues {path}" if path else
                 f"starts a new run: no usable earlier run of this config under {this_run.parent}")
        if skipped:  # one line: what it took, what it passed over and why
            log.warning("resume=auto %s, skipping: %s", taken, " | ".join(skipped))
        else:
            log.info("resume=auto %s", taken)
        if path is None:
            return None, None, None
    else:
        path = as_given(resume)  # a link's own folder is the run it names (run_dir)
    saved = _stored_config(path)
    check_compatible(path, saved, config)
    check_batch_size(path, saved, config)
    # RUN/checkpoints/X.ckpt continues in RUN: the same TensorBoard run, samples and checkpoints.
    return str(path), run_dir(path), saved


def resuming_message(ckpt_path: str, run: Path) -> str:
    """What the log says a resume does: the checkpoint it reads and the run folder it writes, and for
    a link, where the link leads (read, never written: the next checkpoint replaces the link)."""
    if not Path(ckpt_path).is_symlink():
        return f"Resuming {ckpt_path}"
    target = Path(ckpt_path).resolve()
    return (f"Resuming {ckpt_path}, a link to {target}: that file is only read, and the run continues in {run} "
            "(its next checkpoint replaces the link).")


class RNGState(Callback):
    """Saves every process's torch, CUDA, numpy and Python RNG states in each checkpoint and restores
    them on resume, so the latents, flips and the DataLoader's shuffling continue as if the run had
    never stopped. Lightning restores weights, optimizers, scaler and loops, but not these.

    Every DDP process starts from the run's one seed (seed_everything), so each would draw the same
    latents, instance noise and augmentations: the global batch of fakes would be one process's
    batch repeated world_size times. So each rank but 0 (which draws what a single process draws)
    takes a stream of its own, derived from the seed, whenever it has none from a checkpoint: a fresh
    run, a resume with another number of processes, or a checkpoint whose ranks shared one stream."""

    def __init__(self):
        self.restored = False  # this rank's own states came back from the checkpoint

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size > 1 and trainer.global_rank > 0 and not self.restored:
            torch.manual_seed((torch.initial_seed() * 1_000_003 + trainer.global_rank) % 2**63)

    def state_dict(self) -> dict:
        # Lightning asks every rank for this state (rank 0 then writes it), so gathering is safe here.
        state = _rng_state()
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, state)
            return {"ranks": gathered}
        return {"ranks": [state]}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores callbacks after the processes have joined and before the first epoch's
        # DataLoader iterator draws its seed; nothing random runs in between.
        ranks = state_dict.get("ranks", [])
        distributed = dist.is_available() and dist.is_initialized()
        world_size, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        if len(ranks) != world_size:
            log.warning("The checkpoint holds RNG states of %d processes, this run has %d: random streams "
                        "restart (weights and optimizers are restored exactly).", len(ranks), world_size)
            return
        _set_rng_state(ranks[rank])
        # One stream shared by every rank (a checkpoint of a run that started them all from one seed)
        # is not this rank's own: on_fit_start gives it one.
        self.restored = world_size == 1 or not all(torch.equal(r["torch"], ranks[0]["torch"]) for r in ranks[1:])


class ResumePosition(Callback):
    """Reads a checkpoint written at an epoch's end (ModelCheckpoint's last.ckpt, or the end of a run
    that trainer.max_steps stopped) as the point between that epoch and the next, before Lightning
    restores its loops from it.

    Lightning saves such a checkpoint with the epoch processed but not yet completed. It resumes
    that correctly only without max_steps: with max_steps it takes every checkpoint for one written
    mid-epoch, so it ran the saved epoch's end again (an empty epoch in the log, the next epoch with
    the data order of the one after it) and counted one epoch too many."""

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        fit_loop = fit_loop_state(checkpoint)
        if fit_loop is None:
            return
        settle_epoch_end(fit_loop)


def check_epochs(path: str, max_epochs: int | None) -> None:
    """A checkpoint that has trained more epochs than trainer.max_epochs leaves nothing to train: one
    error before the run starts (Lightning's own check comes after the logger wrote to the run)."""
    fit_loop = fit_loop_state(read_checkpoint(path, arg="resume", hint=RESUME_HINT))
    if max_epochs in (None, -1) or fit_loop is None:
        return
    fit_loop = copy.deepcopy(fit_loop)
    settle_epoch_end(fit_loop)
    epochs = epochs_completed(fit_loop)
    if epochs > max_epochs:
        raise UserError(f"resume={path!r} has trained {epochs} epochs, more than trainer.max_epochs="
                        f"{max_epochs}: nothing is left to train. Resume with trainer.max_epochs above "
                        f"{epochs} to train further.")


def _rng_state() -> dict:
    mt, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's and Python's states as tensors and ints: weights_only loading accepts them.
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": {"version": random.getstate()[0], "state": list(random.getstate()[1])},
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))


class SaveOnSignal(Callback):
    """SIGTERM, which SLURM and Kubernetes send before they stop a job, SIGHUP (the terminal or ssh
    session of the run closed), SIGXCPU (a CPU-time limit, sent before SIGKILL) and Ctrl-C end the
    run after the training step under way and save `ckpt_path` (the run's last.ckpt) at that point:
    weights, optimizers, loops, RNG states and the position in the epoch, so resume=auto continues
    exactly. (Before training and after it, startup.guard handles the same signals; SIGQUIT keeps
    its default, an immediate stop: see celebgan.run.startup.)

    Lightning catches SIGTERM and stops its loop after the step (SIGTERMException); this saves the
    checkpoint on the way out. SIGUSR1 (SLURM's warning before the time limit) does the same,
    except under SLURM with auto-requeue, where Lightning's SLURM plugin owns it (it saves its own
    checkpoint and requeues the job). Ctrl-C (SIGINT) takes the same way: Lightning's own handling
    of it would stop in the middle of a step and save nothing. A second Ctrl-C is ignored (with a
    word saying so): the save it would cut short is the one that lets the run continue.

    After SIGHUP the console is usually gone: its lines fail quietly (logging drops them), and the
    run's log file records the stop and the save.

    `signum` is the first stop signal received (SIGUSR1 counts as SIGTERM); `exit_status` is the
    process's status after the stop, 128 + signum as a shell reports it (143 for SIGTERM, 129 for
    SIGHUP, 152 for SIGXCPU, 130 for Ctrl-C).
    """

    def __init__(self, *, ckpt_path: str):
        self.ckpt_path = ckpt_path
        self.signum: int | None = None
        self._replaced: dict[int, tuple[object, object]] = {}  # signal: (handler set here, the one before)

    @property
    def exit_status(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.signum = None
        if threading.current_thread() is not threading.main_thread():
            return
        if not lightning_owns_sigusr1():
            self._replace(signal.SIGUSR1, _as_sigterm)
        lightning_sigterm = lightning_stop_handler()
        if lightning_sigterm is not None:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
                # A signal the process was started ignoring stays ignored: `nohup` ignores SIGHUP so
                # that a run outlives its terminal, and a script's background job ignores SIGINT.
                if signum != signal.SIGTERM and signal.getsignal(signum) is signal.SIG_IGN:
                    log.info("%s is ignored in this process (nohup ignores SIGHUP, a script's background job "
                             "SIGINT): it will not stop the run.", signal.Signals(signum).name)
                    continue
                self._replace(signum, partial(self._on_stop_signal, lightning_sigterm))

    def _replace(self, signum: int, handler) -> None:
        previous = signal.signal(signum, handler)
        self._replaced.setdefault(signum, (handler, previous))

    def _on_stop_signal(self, lightning_sigterm, signum: int, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            log.warning("Ctrl-C again: ignored while the run stops and saves %s (Ctrl-\\ or kill -9 %d ends it "
                        "at once; the last complete last.ckpt stays valid).", self.ckpt_path, os.getpid())
            return
        if self.signum is None:
            self.signum = signum
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            log.warning("%s: stopping after the training step under way, then saving %s.", what, self.ckpt_path)
            # A DataLoader worker ended by the same signal (one that died before it could ignore it) is
            # part of the stop: torch's SIGCHLD handler would raise its RuntimeError at whatever line
            # the training process is on, possibly in the middle of a step. Without it, a dead worker
            # shows at the next fetch, between two steps (stopped_by_signal).
            self._replace(signal.SIGCHLD, signal.SIG_DFL)
        lightning_sigterm(signal.SIGTERM, frame)  # stops the loop after the step, on every rank

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Only what is still this callback's: Lightning restores its own handlers before this hook.
        for signum, (handler, previous) in self._replaced.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)
        self._replaced = {}

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not stopped_by_signal(trainer, exception):
            return
        # Every rank takes part; rank 0 writes. The whole training state (optimizers, loops), as
        # ModelCheckpoint saves it: said here, Lightning would announce its default.
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        if trainer.is_global_zero:
            named = {signal.SIGINT: "Ctrl-C", signal.SIGHUP: "SIGHUP", signal.SIGXCPU: "SIGXCPU"}
            how = named.get(self.signum, "a signal")
            log.warning("Stopped by %s after training step %d (epoch %d); saved %s. Continue the run "
                        "with resume=auto (or resume=%s).", how, pl_module.steps_done, trainer.current_epoch + 1,
                        self.ckpt_path, self.ckpt_path)


class TrainingPhase(Callback):
    """Tells startup.guard when the fit trains (SaveOnSignal's time) and when it has ended."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        startup.training(True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        startup.training(False)


def stopped_by_signal(trainer: Trainer, exception: BaseException) -> bool:
    """Whether `exception` ended the fit because of a stop signal (SaveOnSignal saved last.ckpt).

    Besides Lightning's SIGTERMException: a DataLoader worker's death once a stop signal arrived,
    the worker having been sent the same signal before it could ignore it
    (batches.worker_init_fn), which the next fetch reports between two steps."""
    if isinstance(exception, SIGTERMException):
        return True
    # A batch whose file descriptors the dead worker held fails to unpickle: ConnectionResetError.
    worker_died = (isinstance(exception, RuntimeError) and "DataLoader worker" in str(exception)
                   or isinstance(exception, ConnectionResetError))
    return trainer.received_sigterm and worker_died


def stop_status(trainer: Trainer) -> int:
    """The exit status of a run stopped by a signal: 128 + the signal's number (SaveOnSignal.exit_status)."""
    saver = next((c for c in trainer.callbacks if isinstance(c, SaveOnSignal)), None)
    return saver.exit_status if saver is not None else 128 + signal.SIGTERM


def _as_sigterm(signum, frame) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
