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
    except SimreduceError as e:
        print(f"simreduce: error: {e}", file=sys.stderr)
        raise SystemExit(exit_code) from None
