"""Train or fit one reducer on cached vectors, score it, and log the run to MLflow."""

import logging
import math
import signal
import time
import warnings
from datetime import datetime

import lightning.pytorch as pl
import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from simreduce import plots, tracking
from simreduce.data import WordVectorDataModule
from simreduce.errors import StopRequested
from simreduce.evaluation import (
    PairSimilarities,
    difference_stats,
    eckart_young_bound,
    neighbour_metrics,
    neighbour_subset,
    pair_similarities,
    pca_explained_variance,
    similarity_spearman,
)
from simreduce.paths import project_root
from simreduce.pipeline import in_multirun
from simreduce.selection import run_score
from simreduce.signals import raise_if_stop_requested

log = logging.getLogger(__name__)


def current_sweep_id() -> str:
    """Shared by every job of one `-m` sweep (Hydra's sweep dir), so selection can find them all."""
    if in_multirun():
        return tracking.sweep_id_of(HydraConfig.get().sweep.dir)
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def build_datamodule(cfg: DictConfig, loaded: tuple[list[str], torch.Tensor] | None = None) -> WordVectorDataModule:
    """The configured data module, set up; `loaded` (words, vectors) saves reading and hashing the cache again."""
    datamodule = instantiate(cfg.data, embedder=instantiate(cfg.embedder))
    if loaded is not None:
        datamodule.words, datamodule.vectors = loaded
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


class StopAtSignal(pl.Callback):
    """Ends training at the step after a stop signal, where no MLflow call is half done (see `signals.py`).

    Lightning checks for SIGTERM itself a little later in the same step and raises `SIGTERMException`, a
    `SystemExit` with status 0; `train` turns that into `StopRequested` too."""

    def on_train_batch_end(self, *args) -> None:
        raise_if_stop_requested()


def train(reducer: pl.LightningModule, datamodule: WordVectorDataModule, cfg: DictConfig, run_id: str) -> None:
    logger = MLFlowLogger(run_id=run_id, tracking_uri=mlflow.get_tracking_uri())
    trainer = instantiate(cfg.trainer, logger=logger)
    trainer.callbacks.append(StopAtSignal())
    with warnings.catch_warnings():
        # The batches are slices of one in-memory tensor: worker processes would only add overhead.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        try:
            trainer.fit(reducer, datamodule=datamodule)
        except SIGTERMException:
            raise StopRequested(signal.SIGTERM) from None


def score_reduction(
    datamodule: WordVectorDataModule,
    reduced: torch.Tensor,
    pairs: dict[str, PairSimilarities],
    dim: int,
    cfg: DictConfig,
) -> dict[str, float]:
    """Every final metric of a run: difference stats, rank and neighbour agreement per pair set, and the
    reference figures (Eckart-Young floor, PCA variance) on the training words.

    Neighbour metrics of `fit` are among the training words, those of `heldout` among the validation words
    alone; each on at most `eval.max_neighbour_words` of them (a seeded sample, its size logged).
    """
    metrics = {f"{name}/{k}": v for name, p in pairs.items() for k, v in difference_stats(p.diff).items()}
    metrics |= {f"{name}/n_pairs": len(p) for name, p in pairs.items()}
    metrics |= {f"{name}/spearman": similarity_spearman(p) for name, p in pairs.items()}
    for name, word_idx in {"fit": datamodule.train_idx, "heldout": datamodule.val_idx}.items():
        subset = neighbour_subset(word_idx, cfg.eval.max_neighbour_words, cfg.seed)
        if found := neighbour_metrics(datamodule.vectors[subset], reduced[subset]):
            metrics |= {f"{name}/{k}": v for k, v in found.items()} | {f"{name}/n_neighbour_words": len(subset)}
    train_vectors = datamodule.train_vectors  # a gathered copy (0.65 GB at 80k x 2048): made once here
    bound = eckart_young_bound(train_vectors, dim)
    metrics |= {
        "bound_ey": bound,
        "pca_explained_variance": pca_explained_variance(train_vectors, dim),
        "compression_ratio": datamodule.dim / dim,
        "n_train_words": len(datamodule.train_idx),
    }
    if bound > 0:  # zero when dim reaches the rank of the training vectors: nothing to compare with
        metrics["rmse_over_bound"] = metrics["fit/rmse"] / math.sqrt(bound)
    return metrics


@torch.no_grad()
def reduce(reducer: torch.nn.Module, vectors: torch.Tensor) -> torch.Tensor:
    return reducer.cpu().eval()(vectors)


def run_name(kind: str, dim: object) -> str:
    """`cosine-d0064`; a dim that is not an integer (a bad override) is shown as given."""
    return f"{kind}-d{dim:04d}" if isinstance(dim, int) else f"{kind}-d{dim}"


def run_experiment(cfg: DictConfig, loaded: tuple[list[str], torch.Tensor] | None = None) -> float:
    """Train one reducer, log everything to its MLflow run, and return the selection score (rmse).

    A job whose config already has a FINISHED run in this sweep is skipped (`tracking.skip_finished`), so
    re-running a killed sweep with the same `hydra.sweep.dir` or `tracking.sweep_id` only does what is missing.
    """
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    uri = cfg.tracking.uri or tracking.default_tracking_uri()
    experiment_id = tracking.prepare_store(uri, cfg.tracking.experiment)
    sweep_id = cfg.tracking.sweep_id or current_sweep_id()
    tracking.close_stale_runs(experiment_id, sweep_id)
    cfg_hash = tracking.config_hash(cfg)
    kind = get_class(cfg.encoder._target_).kind
    name = run_name(kind, cfg.encoder.dim)
    if cfg.tracking.skip_finished and (done := tracking.find_finished_run(experiment_id, sweep_id, cfg_hash)):
        log.info("%s: skipped, run %s of sweep %s already finished this config", name, done.info.run_id, sweep_id)
        return run_score(done.data.metrics)

    datamodule = build_datamodule(cfg, loaded)
    tags = {
        "sweep_id": sweep_id,
        "embedder": cfg.embedder.name,
        "encoder": kind,
        "config_hash": cfg_hash,
        "git_commit": tracking.git_commit(project_root()),
        **tracking.process_tags(),
    }
    with tracking.job_run(uri, experiment_id, name, tags) as run_id:
        reducer = instantiate(cfg.encoder, in_dim=datamodule.dim)
        dim = reducer.hparams.dim
        # At or above the rank of the training set a reducer can reach zero fit loss trivially.
        mlflow.set_tag("degenerate", str(dim >= len(datamodule.train_idx)).lower())
        tracking.log_config(cfg)
        started = time.perf_counter()
        reducer.prepare(datamodule.train_vectors)
        raise_if_stop_requested()
        if reducer.trains:
            train(reducer, datamodule, cfg, run_id)
        train_seconds = time.perf_counter() - started

        reduced = reduce(reducer, datamodule.vectors)
        pairs = pair_similarities(
            datamodule.vectors,
            reduced,
            datamodule.train_idx,
            cfg.eval.max_exact_n,
            cfg.eval.n_sampled_pairs,
            cfg.seed,
        )
        metrics = score_reduction(datamodule, reduced, pairs, dim, cfg) | {"train_seconds": train_seconds}
        raise_if_stop_requested()
        mlflow.log_metrics(metrics)

        fit = pairs["fit"]
        label = f"{kind} | {dim:04d}"
        tracking.log_figures(
            plots.study_charts(fit.original, f"original {datamodule.dim}", {label: fit.reduced}, {label: fit.diff})
        )
        tracking.log_array(fit.diff, "diffs/fit.npy")
        tracking.log_array(fit.original, "similarities/fit_original.npy")
        if cfg.tracking.log_model:
            tracking.log_reducer_model(reducer.net, datamodule.vectors[:8])

    score = run_score(metrics)
    log.info(
        "%s: fit/rmse=%.5f score=%.5f (%.1fs training)",
        name,
        metrics["fit/rmse"],
        score,
        train_seconds,
    )
    return score
