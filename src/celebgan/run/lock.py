"""One live process owns a run folder: RUN/run.lock names it (process id, host, since when).

Two processes writing one run would leave one run's config, another's hparams, a last.ckpt of
either and two interleaved TensorBoard curves. The lock is created atomically (O_CREAT|O_EXCL)
and removed however the run ends; a lock left by a process that no longer runs on this host is
taken over with a message. A launcher's further ranks (Lightning's DDP re-runs the command with
the same run folder) own nothing: rank 0 holds the lock for all of them.
"""
import atexit
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from celebgan.errors import UserError
from celebgan.run import startup
from celebgan.io import is_running

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# Where launchers put a process's rank (Lightning's order), and the node's rank of a multi-node run.
RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def owns_runs() -> bool:
    """False in a process that a launcher started as a further rank or node of a run."""
    rank = next((os.environ[key] for key in RANK_KEYS if key in os.environ), "0")
    return int(rank) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat), or None where there is
    no /proc: with the pid it tells a lock's process from a later one that got the same id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": process_start(os.getpid()),
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
            "slurm_job": os.environ.get("SLURM_JOB_ID"), "command": " ".join(sys.argv)}


def read_owner(lock: Path) -> dict | None:
    """The lock's owner, or None when the file is empty or unreadable (its writer was stopped
    between creating and writing it)."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def is_mine(owner: dict) -> bool:
    me = this_process()
    return all(owner.get(key) == me[key] for key in ("pid", "host", "process_start"))


def has_ended(owner: dict) -> bool:
    """Whether the owner is known to be gone: a process of this host that no longer runs (or whose
    id a later process took), or an earlier run of this SLURM job (a requeued job keeps its id and
    never runs twice at once). A process of another host cannot be checked."""
    if owner.get("host") == socket.gethostname():
        if not is_running(owner["pid"]):
            return True
        start, saved = process_start(owner["pid"]), owner.get("process_start")
        return start is not None and saved is not None and start != saved
    return owner.get("slurm_job") is not None and owner.get("slurm_job") == os.environ.get("SLURM_JOB_ID")


def describe(owner: dict) -> str:
    return f"process {owner['pid']} on host {owner.get('host')} (since {owner.get('since')})"


def refusal(run_dir: Path, lock: Path, owner: dict | None) -> UserError:
    elsewhere = "a new run can go to another folder instead (hydra.run.dir=DIR)."
    if owner is None:
        return UserError(f"{run_dir} is locked by {lock}, which names no process (one stopped while taking "
                         f"the lock?). If no other run writes this folder, delete {lock} and start again; {elsewhere}")
    if owner.get("host") != socket.gethostname():
        return UserError(f"{run_dir} is in use by {describe(owner)}, which cannot be checked from host "
                         f"{socket.gethostname()}. If that run has ended (or its host is gone), delete {lock} and "
                         f"start again; otherwise wait for it to end. Or {elsewhere}")
    return UserError(f"{run_dir} is in use by {describe(owner)}: two processes would mix one run's checkpoints, "
                     f"grids and curves. Wait for it to end or stop it; {elsewhere}")


def take_over(lock: Path, owner: dict) -> None:
    """Removes the lock of an ended owner, unless another process took it over first."""
    aside = lock.with_name(f".{lock.name}.tmp{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process removed it: the next attempt meets that one's lock, or none
    if read_owner(aside) != owner:  # another process's new lock, moved aside by mistake: put it back
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    else:
        log.warning("%s: took over the lock of %s, which no longer runs.", lock.parent, describe(owner))
    aside.unlink(missing_ok=True)


def acquire(run_dir: str | os.PathLike) -> None:
    """Makes this process the owner of `run_dir` (created if needed), or raises a UserError that
    names the owner. A lock this process holds already is kept as it is."""
    run_dir = Path(run_dir).absolute()
    lock = run_dir / LOCK_NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a stale lock taken over by two processes at once: one of them wins
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_owner(lock)
            if owner is not None and is_mine(owner):
                return
            if owner is None or not has_ended(owner):
                raise refusal(run_dir, lock, owner) from None
            take_over(lock, owner)
            continue
        with os.fdopen(fd, "w") as out:
            json.dump(this_process(), out, indent=1)
        return
    raise refusal(run_dir, lock, read_owner(lock))


def release(run_dir: str | os.PathLike) -> None:
    """Removes the lock of `run_dir` if this process holds it."""
    lock = Path(run_dir).absolute() / LOCK_NAME
    owner = read_owner(lock)
    if owner is not None and is_mine(owner):
        lock.unlink(missing_ok=True)


@contextmanager
def owned(run_dir: str | os.PathLike) -> Iterator[None]:
    """`run_dir` belongs to this process until the block ends, however it ends (a SIGTERM ends a
    run with SystemExit, which passes through here too). A folder created for the lock alone is
    removed again when nothing else was written into it."""
    if not owns_runs():
        yield
        return
    run_dir = Path(run_dir).absolute()
    created = not run_dir.exists()
    acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir)
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def lost(run_dir: str | os.PathLike) -> bool:
    """Whether the lock this process took on `run_dir` is gone: the folder was deleted (or the lock
    removed by hand) while the run wrote into it."""
    if not owns_runs():
        return False
    lock = Path(run_dir).absolute() / LOCK_NAME
    try:
        lock.stat()
    except FileNotFoundError:
        return True
    except OSError:  # unreadable for now (permissions, a mount): not known to be lost
        return False
    owner = read_owner(lock)
    return owner is not None and not is_mine(owner)


class HydraRunLock(Callback):
    """Takes the run folder as soon as Hydra has chosen it, before Hydra writes its config and log
    there: a command that meets a folder in use (an explicit hydra.run.dir, or two runs started in
    the same second) stops without touching it. `train` releases it when the run ends."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not owns_runs():
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()  # what Hydra creates next
        created = not run_dir.exists()
        try:
            acquire(run_dir)
        except UserError as err:
            # Hydra turns an exception of a callback into a warning and writes into the folder anyway:
            # this ends the command here, as celebgan.cli.command ends it for any UserError.
            print(f"Error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        # A stop signal from here on ends the command through its `finally`s (startup.guard).
        startup.install_guard()
        # In case the command ends before train() takes over (Ctrl-C or a signal while Hydra writes
        # its files): the folder goes too when it holds nothing a training step wrote.
        atexit.register(release_unused, run_dir, created, f"{OmegaConf.select(config, 'hydra.job.name')}.log")


def release_unused(run_dir: Path, created: bool, log_name: str | None = None) -> None:
    release(run_dir)
    if not created or not run_dir.is_dir():
        return
    if not any(run_dir.iterdir()):
        run_dir.rmdir()
    elif log_name is not None and startup.holds_only_startup_files(run_dir, log_name):
        shutil.rmtree(run_dir, ignore_errors=True)


def remove_abandoned(runs_root: Path, log_name: str, *, own: Path) -> None:
    """Removes the run folders under runs_root (other than `own`) of runs killed while they started
    (SIGKILL, which nothing can catch): a lock whose process no longer runs on this host, beside
    start-up files alone. A lock of another host is left alone, however old: its process cannot be
    checked from here."""
    own = Path(own).absolute()
    for run in sorted(runs_root.iterdir()) if runs_root.is_dir() else ():
        try:  # hydra.run.dir may put the run beside anything (/tmp): folders of others are skipped
            owner = read_owner(run / LOCK_NAME) if run.absolute() != own and (run / LOCK_NAME).is_file() else None
            if owner is None or owner.get("host") != socket.gethostname() or not has_ended(owner):
                continue
            abandoned = startup.holds_only_startup_files(run, log_name, also=(LOCK_NAME,))
        except OSError:
            continue
        if abandoned:
            shutil.rmtree(run, ignore_errors=True)
            log.info("Removed %s: the run that %s started there was killed before its first training step.",
                     run, describe(owner))
