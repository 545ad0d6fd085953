"""The Hydra config that ships inside the package, the resolvers it reads, and the data it builds.

Run-time folders (the MLflow store, the vector cache, Hydra's logs) live under one root: `$SIMREDUCE_ROOT`, else
the working directory, as MLflow's `./mlruns` and Hydra's `./outputs` do. Every folder is an interpolation of
`${paths.root}` in `conf/paths/default.yaml`, so one override moves any of them.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from simreduce.runtime.distributed import launch_time, world

if TYPE_CHECKING:
    from simreduce.vectors.data import VectorDataModule  # Lightning: loaded by the job, not by the config

ROOT_ENV = "SIMREDUCE_ROOT"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data: the wheel carries it


def project_root() -> Path:
    """`$SIMREDUCE_ROOT` if set, else the working directory."""
    return Path(os.environ.get(ROOT_ENV) or Path.cwd()).resolve()


def largest_size(sizes: object) -> int | None:
    """The largest of a list of sizes, a nested encoder's width: `dim: ${simreduce.largest:${.dims}}`. Anything
    but positive ints is passed over here, for the encoder to name in its own error."""
    numbers = [s for s in sizes if isinstance(s, int) and s > 0] if isinstance(sizes, Sequence) else []
    return max(numbers, default=None)


OmegaConf.register_new_resolver("simreduce.root", lambda: str(project_root()), replace=True)
# A file's name without folder or extension, to name a source's experiment: `${simreduce.stem:${.path}}`.
OmegaConf.register_new_resolver("simreduce.stem", lambda path: Path(str(path)).stem, replace=True)
OmegaConf.register_new_resolver("simreduce.largest", largest_size, replace=True)
# Cached per format, as Hydra's `now` is: a sweep's dir, read again at its end, names the same sweep. The
# processes of one trainer=ddp job share rank 0's, so they share their dirs.
OmegaConf.register_new_resolver(
    "simreduce.launch_time", lambda fmt: launch_time().strftime(fmt), use_cache=True, replace=True
)
# trainer=ddp: Lightning's `devices` and `num_nodes` as the launcher started them (1 and 1 when nothing did).
OmegaConf.register_new_resolver("simreduce.processes_per_node", lambda: world().per_node, replace=True)
OmegaConf.register_new_resolver("simreduce.nodes", lambda: world().nodes, replace=True)


def config_group(group: str, option: str = "default") -> DictConfig:
    """One option of a config group as its YAML says (`paths/default`, `select/default`): the commands outside
    Hydra read the same defaults as `simreduce train`."""
    return OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml")


def load_data(data_cfg: DictConfig) -> "VectorDataModule":
    """The configured data module (config group `data`), its vectors loaded and split."""
    from hydra.utils import instantiate  # not at import: `simreduce --help` and select read this module too

    datamodule = instantiate(data_cfg)
    datamodule.setup("fit")
    return datamodule
