"""Encoders whose training fails as a full disk fails a job: an OSError of ENOSPC (a cache or artifact file written)
and SQLite's "database or disk is full" through SQLAlchemy (the MLflow store written), as a test needs them."""

import errno
import sqlite3

from sqlalchemy.exc import OperationalError

from simreduce.reducers.cosine import CosineEncoder

FULL_AT_STEP = 3


class FillsTheDisk(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if batch_idx == FULL_AT_STEP:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().training_step(batch, batch_idx)


class FillsTheStore(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if batch_idx == FULL_AT_STEP:
            full = sqlite3.OperationalError("database or disk is full")
            raise OperationalError("INSERT INTO metrics (key, value) VALUES (?, ?)", ("train/loss", 0.1), full)
        return super().training_step(batch, batch_idx)
