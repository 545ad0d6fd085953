"""One Hydra job, top to bottom: words -> cached vectors -> reducer -> metrics and charts -> one MLflow run.

The vectors are made first, with nothing heavier than torch and transformers imported: a bad word file or
an unloadable model then fails in about two seconds, not after Lightning's and MLflow's imports.
"""

from hydra.utils import instantiate
from omegaconf import DictConfig

from simreduce.cache import VectorCache, cached_word_vectors
from simreduce.paths import default_cache_dir
from simreduce.words import load_words


def prepare_vectors(cfg: DictConfig) -> None:
    """Embed and cache the configured words if no valid cache holds them yet."""
    words = load_words(cfg.data.n_words, cfg.data.words_file)
    cached_word_vectors(instantiate(cfg.embedder), words, VectorCache(cfg.data.cache_dir or default_cache_dir()))


def run_job(cfg: DictConfig) -> float:
    """Train (or fit) one reducer, log everything to MLflow, and return the selection score (rmse)."""
    prepare_vectors(cfg)
    from simreduce.experiment import run_experiment  # the heavy imports, deferred on purpose (see above)

    return run_experiment(cfg)
