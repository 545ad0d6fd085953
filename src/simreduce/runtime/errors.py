"""The one exception type for mistakes a user can fix; entry points print it as one line, no traceback."""

import contextlib
import signal
import sys
from collections.abc import Iterator


class SimreduceError(Exception):
    """A bad input or setting, explained in one sentence that names the value and the way out."""


class StopRequested(BaseException):
    """A stop signal (SIGTERM from `kill` or a scheduler, SIGINT from Ctrl-C) unwinding the job.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it; the open MLflow run
    ends KILLED on its way out.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Turn a SimreduceError (or a stop signal) into one line on stderr and a non-zero exit; other errors keep
    their traceback."""
    try:
        yield
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        print(f"simreduce: error: {user_error}", file=sys.stderr)
        raise SystemExit(exit_code) from None
    except StopRequested as stop:
        print(f"simreduce: {stop}; a run it interrupted is marked KILLED", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None


def find_user_error(error: BaseException) -> SimreduceError | None:
    """The SimreduceError behind `error`, also when a library re-raised it (Hydra's `instantiate` does)."""
    while error is not None:
        if isinstance(error, SimreduceError):
            return error
        error = error.__cause__
    return None
