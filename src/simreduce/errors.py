"""The one exception type for mistakes a user can fix; entry points print it as one line, no traceback."""

import contextlib
import sys
from collections.abc import Iterator


class SimreduceError(Exception):
    """A bad input or setting, explained in one sentence that names the value and the way out."""


@contextlib.contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Turn a SimreduceError into one line on stderr and a non-zero exit; other errors keep their traceback."""
    try:
        yield
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        print(f"simreduce: error: {user_error}", file=sys.stderr)
        raise SystemExit(exit_code) from None


def find_user_error(error: BaseException) -> SimreduceError | None:
    """The SimreduceError behind `error`, also when a library re-raised it (Hydra's `instantiate` does)."""
    while error is not None:
        if isinstance(error, SimreduceError):
            return error
        error = error.__cause__
    return None
