"""One Hydra job, top to bottom: words -> cached vectors -> reducer -> metrics and charts -> one MLflow run.

The vectors are made first, with nothing heavier than torch and transformers imported: a bad word file or
an unloadable model then fails in about two seconds, not after Lightning's and MLflow's imports.
"""

import logging

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from simreduce.cache import VectorCache, cached_word_vectors
from simreduce.errors import find_user_error
from simreduce.paths import default_cache_dir
from simreduce.signals import stop_signals_deferred
from simreduce.words import load_words

log = logging.getLogger(__name__)


def prepare_vectors(cfg: DictConfig) -> tuple[list[str], torch.Tensor]:
    """The configured words and their [N, D] vectors, embedded and cached if no valid cache holds them yet."""
    words = load_words(cfg.data.n_words, cfg.data.words_file)
    cache = VectorCache(cfg.data.cache_dir or default_cache_dir())
    return words, cached_word_vectors(instantiate(cfg.embedder), words, cache)


def in_multirun() -> bool:
    """Whether this job is one of a Hydra `-m` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(cfg: DictConfig) -> float:
    """Train (or fit) one reducer, log everything to MLflow, and return the selection score (rmse).

    In a sweep, a job that fails inside its run (its MLflow run is then FAILED, with the error) is reported
    and scored NaN so the other sizes still run and the sweep summary names it; a bad word list or model
    fails every job alike, so it stops the sweep at once.
    """
    words, vectors = prepare_vectors(cfg)
    from simreduce.experiment import run_experiment  # the heavy imports, deferred on purpose (see above)

    with stop_signals_deferred():
        try:
            return run_experiment(cfg, (words, vectors))
        except Exception as e:
            if not in_multirun():
                raise
            if user_error := find_user_error(e):
                log.error("job failed: %s", user_error)
            else:
                log.exception("job failed")
            return float("nan")
