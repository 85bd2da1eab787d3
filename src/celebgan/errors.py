class UserError(ValueError):
    """A problem the user can fix (a missing dataset, a bad config value); the message says how.

    The command-line entry points print it without a traceback and exit with status 2.
    """
