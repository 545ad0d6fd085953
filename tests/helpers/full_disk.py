"""Encoders whose training fails as a full disk fails a job: an OSError of ENOSPC (a cache or artifact file written)
and SQLite's "database or disk is full" through SQLAlchemy (the MLflow store written), as a test needs them; only
while `$DISK_FULL` is set, so the same command trains once space is "freed"."""

import errno
import os
import sqlite3

from sqlalchemy.exc import OperationalError

from simreduce.reducers.cosine import CosineEncoder

FULL_AT_STEP = 3
DISK_FULL = "SIMREDUCE_TEST_DISK_FULL"


def disk_full_at(batch_idx: int) -> bool:
    return batch_idx == FULL_AT_STEP and bool(os.environ.get(DISK_FULL))


class FillsTheDisk(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if disk_full_at(batch_idx):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().training_step(batch, batch_idx)


class FillsTheStore(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if disk_full_at(batch_idx):
            full = sqlite3.OperationalError("database or disk is full")
            raise OperationalError("INSERT INTO metrics (key, value) VALUES (?, ?)", ("train/loss", 0.1), full)
        return super().training_step(batch, batch_idx)
