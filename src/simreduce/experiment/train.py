"""`simreduce train [-m] <overrides>`: one Hydra run, or a sweep, of `job.run_job`, with the config shipped in
the package."""

import hydra
from omegaconf import DictConfig

from simreduce.runtime.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def train(cfg: DictConfig) -> float:
    # Imported once Hydra has read the command line: a bad override or `--help` answers before torch loads.
    from simreduce.experiment.job import run_job

    with exit_on_user_error(store=cfg.tracking.uri):
        return run_job(cfg)
