import functools
import logging
import os
import sys
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
    constructor) is logged as its message alone and ends the process with status 2."""
    try:
        yield
    except (UserError, InstantiationException) as err:
        cause = err if isinstance(err, UserError) else err.__cause__
        if not isinstance(cause, UserError):
            raise
        log.error("%s", cause)
        sys.exit(2)


# TypeErrors of a constructor call that come from the config's keys, not from a bug.
_BAD_ARGUMENTS = ("unexpected keyword argument", "required keyword-only argument", "required positional argument")


def user_message(err: BaseException) -> str | None:
    """The one-line explanation of a mistake on the command line or in the config, or None when
    `err` is not one (a bug, which keeps its traceback)."""
    if isinstance(err, UserError):
        return str(err)
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


def command(hydra_main: Callable[[], None]) -> Callable[[], None]:
    """Wraps a @hydra.main entry point so that every user mistake, also one Hydra finds while it
    composes the config (an unknown key, a missing value, a malformed override), is one message
    on stderr and exit status 2, with no traceback. Anything else keeps its full traceback."""

    @functools.wraps(hydra_main)
    def run() -> None:
        # Unset, Hydra prints its own errors and exits 1; set, it raises them to be handled here.
        previous = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
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
