import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException


class UserError(ValueError):
    """A problem the user can fix (a missing dataset, a bad config value); the message says how.

    The command-line entry points print it without a traceback and exit with status 2.
    """


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
