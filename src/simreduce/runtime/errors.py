"""The exceptions a person sees as one line, no traceback: their own mistakes (exit 2) and failures whose cause is
known (a full disk, a rank that died: exit 1); entry points print them."""

import contextlib
import errno
import signal
import sys
from collections.abc import Iterator

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # "No space left on device", "Disk quota exceeded"
SQLITE_FULL = "database or disk is full"  # SQLite's word for the same, through SQLAlchemy and MLflow


class SimreduceError(Exception):
    """A bad input or setting, explained in one sentence that names the value and the way out."""


class KnownFailure(Exception):
    """A failure that is no bad setting but whose cause is known (a full disk, a rank of a trainer=ddp job that
    died), explained in one sentence that names it and what to do."""


class DiskFull(KnownFailure):
    def __init__(self, where: str, reason: str):
        self.reason = reason
        super().__init__(
            f"no space left on the disk holding {where} ({reason}): free space there, then run the same command again."
        )


class StopRequested(BaseException):
    """A stop signal (SIGTERM from `kill` or a scheduler, SIGINT from Ctrl-C) unwinding the job.

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it; the open MLflow run
    ends KILLED on its way out.
    """

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def exit_on_user_error(exit_code: int = 2, store: str | None = None) -> Iterator[None]:
    """Turn a SimreduceError into one line on stderr and exit `exit_code`, a known failure (see `explained`; `store`:
    the MLflow store's URI, to name it when it is full) into one line and exit 1, a stop signal into one line and
    exit 128 + its number; other errors keep their traceback."""
    try:
        yield
    except Exception as e:
        found = explained(e, store)
        if found is None:
            raise
        print(f"simreduce: error: {found}", file=sys.stderr)
        raise SystemExit(exit_code if isinstance(found, SimreduceError) else 1) from None
    except StopRequested as stop:
        print(f"simreduce: {stop}; a run it interrupted is marked KILLED", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None


def _raised_behind(error: BaseException) -> SimreduceError | KnownFailure | None:
    """The SimreduceError or KnownFailure behind `error`, also when a library re-raised it (Hydra's `instantiate`
    does)."""
    while error is not None:
        if isinstance(error, SimreduceError | KnownFailure):
            return error
        error = error.__cause__
    return None


def explained(error: BaseException, store: str | None = None) -> SimreduceError | KnownFailure | None:
    """What a person is told instead of `error`'s traceback: the SimreduceError or KnownFailure behind it, or a full
    disk anywhere in its chain (`full_disk`); None for a bug, which keeps its traceback."""
    return _raised_behind(error) or full_disk(error, store)


def full_disk(error: BaseException, store: str | None = None) -> DiskFull | None:
    """A full disk behind `error`: an OSError of `NO_SPACE`, or SQLite's "database or disk is full" (in the MLflow
    store `store`), found through the errors it was raised from or while handling (marking a run FAILED on a full
    store fails too)."""
    seen, stack = set(), [error]
    while stack:
        found = stack.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        if isinstance(found, OSError) and found.errno in NO_SPACE:
            unnamed = "a folder simreduce writes to (the MLflow store's, .cache/, the output dir)"
            return DiskFull(repr(str(found.filename)) if found.filename else unnamed, errno.errorcode[found.errno])
        if SQLITE_FULL in str(found):
            where = f"the MLflow store {store}" if store else "the MLflow store (tracking.uri)"
            return DiskFull(where, f"SQLite: {SQLITE_FULL}")
        stack += [found.__context__, found.__cause__]
    return None
