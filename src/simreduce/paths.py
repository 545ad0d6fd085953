"""Where the project's run-time folders live: anchored at the project root, never at Hydra's output dir."""

import os
from pathlib import Path

ROOT_ENV = "SIMREDUCE_ROOT"


def project_root() -> Path:
    """`$SIMREDUCE_ROOT` if set, else the nearest folder at or above the cwd that holds `conf/config.yaml`."""
    if env := os.environ.get(ROOT_ENV):
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    return cwd


def default_cache_dir() -> Path:
    return project_root() / ".cache" / "vectors"
