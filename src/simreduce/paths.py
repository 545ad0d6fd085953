"""Where the project's run-time folders live: anchored at the project root, never at Hydra's output dir.

The config reads the root through the resolver `${simreduce.root:}` (registered, with `${simreduce.stem:}` and
`${simreduce.largest:}`, when this module is imported; `simreduce/__init__.py` does so), and every folder under it
is an interpolation in `conf/paths/default.yaml`.
"""

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

ROOT_ENV = "SIMREDUCE_ROOT"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # the checkout's Hydra config, beside src/


def project_root() -> Path:
    """`$SIMREDUCE_ROOT` if set, else the nearest folder at or above the cwd that holds `conf/config.yaml`."""
    if env := os.environ.get(ROOT_ENV):
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "conf" / "config.yaml").is_file():
            return folder
    return cwd


OmegaConf.register_new_resolver("simreduce.root", lambda: str(project_root()), replace=True)
# A file's name without folder or extension, to name a source's experiment: `${simreduce.stem:${.path}}`.
OmegaConf.register_new_resolver("simreduce.stem", lambda path: Path(str(path)).stem, replace=True)


def largest_size(sizes: object) -> int | None:
    """The largest of a list of sizes, a nested encoder's width: `dim: ${simreduce.largest:${.dims}}`. Anything
    but positive ints is passed over here, for the encoder to name in its own error."""
    numbers = [s for s in sizes if isinstance(s, int) and s > 0] if isinstance(sizes, Sequence) else []
    return max(numbers, default=None)


OmegaConf.register_new_resolver("simreduce.largest", largest_size, replace=True)


def default_paths() -> DictConfig:
    """`conf/paths/default.yaml` (root, cache_dir, store_uri): the commands outside Hydra read the same defaults
    as `train.py`."""
    return OmegaConf.load(CONFIG_DIR / "paths" / "default.yaml")
