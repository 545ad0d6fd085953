"""What a sweep's jobs leave for its end: one line per job that skipped its size or failed, in the job's Hydra
output dir, repeated by the summary (the jobs may be other processes)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from simreduce.runtime.errors import full_disk

SKIPPED_FILE = "skipped.txt"
FAILED_FILE = "failed.txt"
FULL_DISK_FILE = "full_disk.txt"  # a job failed on a full disk: the sweep's end selects nothing


def in_multirun() -> bool:
    """Whether this job is one of a Hydra `-m` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_verbose() -> bool:
    """Whether Hydra was asked for everything (`hydra.verbose=true`, or a list of loggers)."""
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def write_job_note(file_name: str, line: str) -> None:
    """One line in this job's Hydra output dir, for the sweep's end to repeat (`job_notes`)."""
    (Path(HydraConfig.get().runtime.output_dir) / file_name).write_text(line + "\n")


def clear_job_notes() -> None:
    """This job's notes from an earlier launch of the same sweep (resumed in its dir): they say nothing of this one,
    and a full disk's would keep the resumed sweep from selecting."""
    folder = Path(HydraConfig.get().runtime.output_dir)
    for file_name in (SKIPPED_FILE, FAILED_FILE, FULL_DISK_FILE):
        (folder / file_name).unlink(missing_ok=True)


def write_failure_note(line: str, disk_full: bool) -> None:
    """A failed job's line, in `FULL_DISK_FILE` too when a full disk failed it. When the disk is too full for the
    note itself, the sweep stops here (exit 1; the job's line is on the console): its end would not know of the
    failure, and must not select or move `@winner` without it."""
    try:
        write_job_note(FAILED_FILE, line)
        if disk_full:
            write_job_note(FULL_DISK_FILE, line)
    except OSError as e:
        if full_disk(e) is None:
            raise
        raise SystemExit(1) from None


def job_notes(sweep_dir: str | Path, file_name: str) -> list[str]:
    """The lines the jobs of a sweep left in `file_name` (`SKIPPED_FILE`, `FAILED_FILE`), in job order."""
    found = Path(sweep_dir).glob(f"*/{file_name}")
    return [p.read_text().strip() for p in sorted(found, key=lambda p: (len(p.parent.name), p.parent.name))]
