"""Errors a user can cause, and the other ways a run ends early, each reported as one line on
stderr instead of a traceback."""

import errno
import functools
import sys

_at_exit = []


class UserError(Exception):
    """A problem with the command line, the data or the models that the user can fix."""


class RunStopped(Exception):
    """The run stopped before its end on purpose (a signal asked it to), after saving what it must
    to resume: one line on stderr and ``exit_status``."""

    def __init__(self, message, exit_status):
        super().__init__(message)
        self.exit_status = exit_status


def release_at_exit(release):
    """Call ``release()`` when the script's ``main`` ends, however it ends (a lock, say)."""
    _at_exit.append(release)


def exit_on_user_error(main):
    """Wrap a script's ``main`` so that a ``UserError`` ends with one line on stderr and exit 2, a
    ``RunStopped`` with its line and status, Ctrl-C with one line and 130, and a disk that filled
    up where no step expected it with one line naming the file and exit 2; what ``release_at_exit``
    registered is released in every case."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except RunStopped as stop:
            print(f"stopped: {stop}", file=sys.stderr)
            sys.exit(stop.exit_status)
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C): the same command resumes the run from its last checkpoint, if it wrote one",
                  file=sys.stderr)
            sys.exit(130)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            print(f"error: no space left on the disk writing {error.filename or 'a file'}: free space and run the "
                  "same command again", file=sys.stderr)
            sys.exit(2)
        finally:
            while _at_exit:
                _at_exit.pop()()

    return wrapper
