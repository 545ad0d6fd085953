"""A Hydra run or sweep: the job, selection of the winner, the console, and MLflow (`tracking/`).

Importing it registers the config's resolvers (`config.py`), which any composition of the config needs."""

from simreduce.experiment import config as _config  # noqa: F401
