"""The error a user can fix, and the checks of config values that raise it: the ground floor
(no Hydra, no torch). What a command makes of it (one `Error: ...` line, exit status 2) is
celebgan.cli's."""
import math


class UserError(ValueError):
    """A problem the user can fix (a missing dataset, a bad config value); the message says how.

    The command-line entry points print it without a traceback and exit with status 2.
    """


def check_whole(key: str, value, minimum: int, note: str = "") -> None:
    """A config value that must be an int >= minimum (a bool, float or string is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key}={value!r} must be a whole number >= {minimum}{note}.")


def check_number(key: str, value, minimum: float, *, above: bool = False, below: float | None = None,
                 optional: bool = False, note: str = "") -> None:
    """A config value that must be a finite number >= minimum (> minimum when `above`; < below when
    given; None too when `optional`). A negative duration or count is refused, never read as "off"."""
    if optional and value is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (number and (value > minimum if above else value >= minimum) and (below is None or value < below)):
        bound = f"{'>' if above else '>='} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
        raise UserError(f"{key}={value!r} must be a number {bound}{' (or null)' if optional else ''}{note}.")
