"""What a person is told instead of a traceback: their own mistakes (exit 2), and failures whose cause is known, a
full disk above all (exit 1), however deep a library buried it."""

import contextlib
import errno
import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from simreduce.experiment import notes
from simreduce.experiment.tracking import TrackingStore
from simreduce.runtime.errors import DiskFull, SimreduceError, exit_on_user_error, explained, full_disk
from simreduce.runtime.log_files import LogFile

STORE = "sqlite:////data/mlruns/mlflow.db"


def store_full() -> OperationalError:
    """What MLflow's SQLAlchemy store raises when SQLite cannot write."""
    return OperationalError("INSERT INTO tags ...", (), sqlite3.OperationalError("database or disk is full"))


def raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    """`then`, raised while `first` was handled (marking a run FAILED on the store that just filled up)."""
    try:
        try:
            raise first
        except BaseException:
            raise then from None
    except BaseException as e:
        return e


def test_a_full_disk_names_the_file_or_the_store_however_deep_it_is():
    written = OSError(errno.ENOSPC, "No space left on device", "/data/.cache/vectors/x.tmp")
    assert str(full_disk(written)).startswith(
        "no space left on the disk holding '/data/.cache/vectors/x.tmp' (ENOSPC): free space there, then run"
    )
    assert "(EDQUOT)" in str(full_disk(OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert f"the MLflow store {STORE} (SQLite: database or disk is full)" in str(full_disk(store_full(), STORE))
    hidden = raised_while_handling(OSError(errno.ENOSPC, "No space left on device"), RuntimeError("end_run failed"))
    assert "a folder simreduce writes to" in str(full_disk(hidden))
    wrapped = RuntimeError("Lightning's wrapper")
    wrapped.__cause__ = store_full()
    assert isinstance(explained(wrapped, STORE), DiskFull)


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "Permission denied"), ValueError("a bug"), KeyError("x")])
def test_other_errors_are_no_full_disk_and_keep_their_traceback(error):
    assert explained(error) is None


def test_a_full_disk_exits_1_in_one_line_and_a_users_mistake_2(capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error(store=STORE):
        raise raised_while_handling(store_full(), store_full())
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"simreduce: error: no space left on the disk holding the MLflow store {STORE}")
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        raise SimreduceError("data.path is missing.")
    assert exit_info.value.code == 2


def test_a_log_file_on_a_full_disk_says_so_once_not_a_traceback_a_record(capsys):
    logger = logging.getLogger("test_errors.full")
    handler = LogFile("/dev/full")  # every write: ENOSPC
    logger.addHandler(handler)
    try:
        for i in range(5):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):  # closing flushes: ENOSPC again, which logging.shutdown ignores too
            handler.close()
    assert capsys.readouterr().err == "simreduce: the log file /dev/full stops here: its disk is full\n"


def test_a_failed_jobs_note_that_the_full_disk_cannot_hold_stops_the_sweep(monkeypatch):
    """The sweep's end would not know of the failure, and could select and move @winner without it."""

    def full(file_name: str, line: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"multirun/x/0/{file_name}")

    monkeypatch.setattr(notes, "write_job_note", full)
    with pytest.raises(SystemExit) as exit_info:
        notes.write_failure_note("FAILED cosine-d0004: no space left", disk_full=True)
    assert exit_info.value.code == 1


def test_a_store_on_a_full_disk_is_said_to_be_full_not_unusable():
    with pytest.raises(DiskFull, match=f"the MLflow store {STORE} \\(SQLite: database or disk is full\\)"):
        with TrackingStore(STORE).usable():  # creating a new store's tables on a full disk
            raise store_full()
