"""Errors a user can cause, reported as one line on stderr instead of a traceback."""

import functools
import sys


class UserError(Exception):
    """A problem with the command line, the data or the models that the user can fix."""


def exit_on_user_error(main):
    """Wrap a script's ``main`` so that a ``UserError`` ends with one line on stderr, exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
