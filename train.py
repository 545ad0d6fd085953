"""Train and log one reducer per Hydra job: `python train.py -m encoder.dim=16,32,64,128,256`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

# Runs, caches and the MLflow store belong to the project, whatever folder this is started from.
os.environ.setdefault("SIMREDUCE_ROOT", str(Path(__file__).resolve().parent))

from simreduce.errors import exit_on_user_error  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # Imported once Hydra has read the command line: a bad override or `--help` answers before torch loads.
    from simreduce.job import run_job

    with exit_on_user_error():
        return run_job(cfg)


if __name__ == "__main__":
    main()
