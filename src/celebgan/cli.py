"""The commands' framework: `command(config_name)`, every command's entry point (Hydra composes
conf/<config_name>.yaml with the command line) and its one error boundary, where a user mistake or a
full disk becomes one `Error: ...` line and exit status 2; `versions`, what `--version` prints."""
import errno
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hydra
from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, ValidationError

from celebgan.errors import UserError


# TypeErrors of a constructor call that come from the config's keys (or an added `_args_`), not from a bug.
_BAD_ARGUMENTS = ("unexpected keyword argument", "required keyword-only argument", "positional argument")


# What a full disk, a quota, a read-only mount or a folder of another user raise on a write.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _chain(err: BaseException) -> list[BaseException]:
    """err, then what it was raised from or while handling, innermost last."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def user_message(err: BaseException) -> str | None:
    """The explanation of a mistake on the command line or in the config, or of a disk that takes
    no more writes, or None when `err` is not one (a bug, which keeps its traceback).

    A UserError stays the message when cleaning up after it failed too (a full disk also fails
    the loggers' final flush): only wrappers and OSErrors may lie between it and `err`."""
    chain = _chain(err)
    for i, e in enumerate(chain):
        if isinstance(e, UserError) and all(isinstance(o, (OSError, InstantiationException)) for o in chain[:i]):
            return str(e)
    message = _direct_message(err)
    if message is not None:
        return message
    disk = [e for e in chain if isinstance(e, OSError) and e.errno in DISK_ERRNOS]
    if disk and all(isinstance(e, OSError) for e in chain):
        e = disk[-1]
        where = f" {e.filename}" if e.filename else ""
        return (f"Could not write{where}: {e.strerror}. Free space on that disk (or make the folder "
                "writable), or write elsewhere with hydra.run.dir=DIR; a training run continues from its "
                "last checkpoint with resume=auto.")
    return None


def wrapped_user_error(err: BaseException) -> UserError | None:
    """The UserError a constructor raised when Hydra's instantiate wrapped it, else None."""
    cause = err.__cause__
    return cause if isinstance(err, InstantiationException) and isinstance(cause, UserError) else None


def _direct_message(err: BaseException) -> str | None:
    if (wrapped := wrapped_user_error(err)) is not None:
        return str(wrapped)
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        if isinstance(cause, TypeError) and any(s in str(cause) for s in _BAD_ARGUMENTS):
            where = str(err).rsplit("full_key: ", 1)[-1].strip() if "full_key: " in str(err) else "the config"
            return (f"{where}: {cause}. Check the keys you set or added under {where} "
                    "(`--cfg job` prints the whole config).")
        return None
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a required key"
        return f"{key} is required but has no value: pass {key}=... on the command line."
    if isinstance(err, OverrideParseException):
        key, _, value = err.override.partition("=")
        # A --multirun job's folder is named by its overrides (0_model=vanilla): paths into it hold "=".
        quote = (f" A value that holds '=' goes in quotes: \"{key}='{value}'\" (or escape it: \\=)."
                 if "=" in value else "")
        return (f"cannot parse the override {err.override!r}: {err.message.splitlines()[0]}.\n"
                f"Overrides are key=value (or group=option), e.g. data.batch_size=64.{quote}")
    if isinstance(err, ConfigCompositionException):  # unknown key or group option, a bad override
        message = str(err).strip()
        cause = err.__cause__
        if cause is not None and str(cause).strip():
            message += f" ({str(cause).strip().splitlines()[0]})"
        return f"{message}\n`--cfg job` prints every key; `--help` lists the config groups and their options."
    if isinstance(err, ValidationError):
        return f"{str(err).strip().splitlines()[0]} (key {err.full_key})."
    return None


def versions() -> str:
    """What `--version` prints: celebgan's version and those of the libraries a run's numbers
    depend on, read from the installed packages' metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # celebgan run from a source tree that was never installed
            return "unknown"

    return f"celebgan {of('celebgan')} (torch {of('torch')}, lightning {of('lightning')}, hydra {of('hydra-core')})"


def _quiet_disk_errors(args: threading.ExceptHookArgs) -> None:
    # A writer thread (TensorBoard's) that hits a full disk, or finds its folder deleted: the main
    # thread meets the same error at its next flush and reports it as one message.
    err = args.exc_value
    if isinstance(err, OSError) and (err.errno in DISK_ERRNOS or _folder_gone(err)):
        return
    threading.__excepthook__(args)


def _folder_gone(err: OSError) -> bool:
    """A FileNotFoundError for a file whose folder no longer exists (a run folder deleted while the run wrote it)."""
    if not isinstance(err, FileNotFoundError) or err.filename is None:
        return False
    return not os.path.isdir(os.path.dirname(os.fsdecode(err.filename)))


def command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """@command("sample") over a function of the composed config makes it a command's entry point:
    Hydra composes conf/<config_name>.yaml with the command line (hydra.main), and this is the
    commands' one error boundary. Every user mistake (a UserError, also one Hydra wrapped while
    calling a constructor; one Hydra finds while it composes the config: an unknown key, a missing
    value, a malformed override; a full disk) is one `Error: ...` line on stderr, also in the job's
    log file where it has one, and exit status 2, with no traceback. Anything else keeps its full
    traceback. A mistake inside the job ends it there: Hydra would add a line of its own to the
    message and, in a --multirun sweep, start the next job."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @functools.wraps(task)  # Hydra names the job (and its log file) after the unwrapped task
        def job(cfg: DictConfig) -> Any:
            with _exit_on_user_mistake(in_job=True):
                return task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path="pkg://celebgan.conf", config_name=config_name)(job)

        @functools.wraps(task)
        def run() -> Any:
            if "--version" in sys.argv[1:]:  # celebgan's, where Hydra's parser would print Hydra's
                print(versions())
                return None
            # Unset, Hydra prints its own errors and exits 1; set, it raises them to be handled here.
            previous = os.environ.get("HYDRA_FULL_ERROR")
            os.environ["HYDRA_FULL_ERROR"] = "1"
            threading.excepthook = _quiet_disk_errors
            try:
                with _exit_on_user_mistake(in_job=False):
                    return hydra_main()
            finally:
                if previous is None:
                    os.environ.pop("HYDRA_FULL_ERROR", None)
                else:
                    os.environ["HYDRA_FULL_ERROR"] = previous

        return run

    return decorate


@contextmanager
def _exit_on_user_mistake(in_job: bool) -> Iterator[None]:
    try:
        yield
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        print(f"Error: {message}", file=sys.stderr)
        if in_job:  # a run's log file says why the run ended, as the console does
            _to_log_files(message)
        sys.exit(2)


def _to_log_files(message: str) -> None:
    record = logging.makeLogRecord({"name": __name__, "levelno": logging.ERROR, "levelname": "ERROR",
                                    "msg": "Error: %s", "args": (message,)})
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
