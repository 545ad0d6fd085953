"""A job's log file (Hydra's `<job>.log`) that stops quietly when its disk is full: Python's handler prints a
traceback of the failed write for every record logged after that, hundreds of lines around the one that says what
happened, which the console shows anyway."""

import logging
import sys

from simreduce.runtime.errors import full_disk


class LogFile(logging.FileHandler):
    """`logging.FileHandler`, but a write that finds the disk full is said once on stderr, not once per record."""

    full = False

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if error is None or full_disk(error) is None:
            super().handleError(record)
            return
        if not self.full:
            self.full = True
            print(f"simreduce: the log file {self.baseFilename} stops here: its disk is full", file=sys.stderr)
