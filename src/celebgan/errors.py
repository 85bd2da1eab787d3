import errno
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from omegaconf.errors import MissingMandatoryValue, ValidationError


class UserError(ValueError):
    """A problem the user can fix (a missing dataset, a bad config value); the message says how.

    The command-line entry points print it without a traceback and exit with status 2.
    """


def check_whole(key: str, value, minimum: int, note: str = "") -> None:
    """A config value that must be an int >= minimum (a bool, float or string is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key}={value!r} must be a whole number >= {minimum}{note}.")


@contextmanager
def exit_on_user_error(log: logging.Logger) -> Iterator[None]:
    """The commands' error boundary: a UserError (also one that Hydra wrapped while calling a
    constructor), a config mistake or a full disk (user_message) is logged as its message alone
    and ends the process with status 2. Anything else propagates with its traceback."""
    try:
        yield
    except Exception as err:
        message = user_message(err)
        if message is None:
            raise
        log.error("%s", message)
        sys.exit(2)


# TypeErrors of a constructor call that come from the config's keys, not from a bug.
_BAD_ARGUMENTS = ("unexpected keyword argument", "required keyword-only argument", "required positional argument")


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


def _direct_message(err: BaseException) -> str | None:
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        if isinstance(cause, UserError):
            return str(cause)
        if isinstance(cause, TypeError) and any(s in str(cause) for s in _BAD_ARGUMENTS):
            where = str(err).rsplit("full_key: ", 1)[-1].strip() if "full_key: " in str(err) else "the config"
            return (f"{where}: {cause}. Check the keys you set or added under {where} "
                    "(`--cfg job` prints the whole config).")
        return None
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a required key"
        return f"{key} is required but has no value: pass {key}=... on the command line."
    if isinstance(err, OverrideParseException):
        return (f"cannot parse the override {err.override!r}: {err.message.splitlines()[0]}.\n"
                "Overrides are key=value (or group=option), e.g. data.batch_size=64.")
    if isinstance(err, ConfigCompositionException):  # unknown key or group option, a bad override
        message = str(err).strip()
        cause = err.__cause__
        if cause is not None and str(cause).strip():
            message += f" ({str(cause).strip().splitlines()[0]})"
        return f"{message}\n`--cfg job` prints every key; `--help` lists the config groups and their options."
    if isinstance(err, ValidationError):
        return f"{str(err).strip().splitlines()[0]} (key {err.full_key})."
    return None


def _quiet_disk_errors(args: threading.ExceptHookArgs) -> None:
    # A writer thread (TensorBoard's) that hits a full disk: the main thread meets the same error
    # at its next flush and reports it as one message.
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_ERRNOS:
        return
    threading.__excepthook__(args)


def command(hydra_main: Callable[[], None]) -> Callable[[], None]:
    """Wraps a @hydra.main entry point so that every user mistake, also one Hydra finds while it
    composes the config (an unknown key, a missing value, a malformed override), is one message
    on stderr and exit status 2, with no traceback. Anything else keeps its full traceback."""

    @functools.wraps(hydra_main)
    def run() -> None:
        # Unset, Hydra prints its own errors and exits 1; set, it raises them to be handled here.
        previous = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        threading.excepthook = _quiet_disk_errors
        try:
            hydra_main()
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            print(f"Error: {message}", file=sys.stderr)
            sys.exit(2)
        finally:
            if previous is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = previous

    return run
