"""Stop signals (SIGTERM from `kill` or a scheduler, SIGINT from Ctrl-C) end a job at its next safe point.

Raising from the signal handler itself can unwind from inside an MLflow or SQLite call that holds a lock;
marking the run KILLED on the way out then waits for that lock forever (the job hangs instead of stopping).
So the first signal only records the request, and the job raises `StopRequested` where nothing is held: after
each training step (`StopAtSignal`) and between its phases (`raise_if_stop_requested`). A second signal
raises at once, for a job stuck somewhere that never checks.
"""

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from simreduce.runtime.errors import StopRequested

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested: list[int] = []  # the signals received while `stop_signals_deferred` is active


def _record(signum: int, frame: object) -> None:
    if _requested:
        raise StopRequested(signum)
    _requested.append(signum)
    log.warning(
        "%s received: the job stops after its current step; send it again to stop at once",
        signal.Signals(signum).name,
    )


def raise_if_stop_requested() -> None:
    if _requested:
        raise StopRequested(_requested[0])


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Within the block, stop signals are recorded and raised as `StopRequested` at the next check, or at the
    block's end at the latest (so a sweep stops even when its last phase had no check left)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    _requested.clear()
    previous = {signum: signal.signal(signum, _record) for signum in STOP_SIGNALS}
    try:
        yield
        raise_if_stop_requested()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _requested.clear()
