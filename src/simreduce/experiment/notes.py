"""What a sweep's jobs leave for its end: one line per job that skipped its size or failed, in the job's Hydra
output dir, repeated by the summary (the jobs may be other processes)."""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

SKIPPED_FILE = "skipped.txt"
FAILED_FILE = "failed.txt"


def in_multirun() -> bool:
    """Whether this job is one of a Hydra `-m` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_verbose() -> bool:
    """Whether Hydra was asked for everything (`hydra.verbose=true`, or a list of loggers)."""
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def write_job_note(file_name: str, line: str) -> None:
    """One line in this job's Hydra output dir, for the sweep's end to repeat (`job_notes`)."""
    (Path(HydraConfig.get().runtime.output_dir) / file_name).write_text(line + "\n")


def job_notes(sweep_dir: str | Path, file_name: str) -> list[str]:
    """The lines the jobs of a sweep left in `file_name` (`SKIPPED_FILE`, `FAILED_FILE`), in job order."""
    found = Path(sweep_dir).glob(f"*/{file_name}")
    return [p.read_text().strip() for p in sorted(found, key=lambda p: (len(p.parent.name), p.parent.name))]
