"""One Hydra job, top to bottom: source -> data -> reducer.fit -> candidates -> evaluate -> log.

The vectors come first, with nothing heavier than torch, Lightning and transformers imported: a bad word list
or an unloadable model fails before MLflow is imported or a run is opened.
"""

import functools
import logging
import time
from datetime import datetime

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from simreduce.experiment.config import load_data
from simreduce.experiment.fitting import build_reducer, fit
from simreduce.experiment.notes import (
    SKIPPED_FILE,
    clear_job_notes,
    in_multirun,
    write_failure_note,
    write_job_note,
)
from simreduce.experiment.settings import job_name, oversized
from simreduce.reducers.base import apply_net
from simreduce.runtime import distributed
from simreduce.runtime.errors import DiskFull, explained
from simreduce.runtime.signals import stop_signals_deferred
from simreduce.vectors.data import VectorDataModule

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> float:
    """Train (or fit) one reducer, log each of its candidates to MLflow, and return the selection score.

    In a sweep, a size at or above the input width is skipped before any run is opened (the README's sweep
    over 16..1024 reduces 2048-d models and meets 384-d ones too), with one line here and one in the sweep's
    summary; a job that fails inside its run (its MLflow run is then FAILED, with the error) is reported and
    scored NaN so the other sizes still run and the summary names it; a bad word list or model fails every
    job alike, so it stops the sweep at once. Over several processes a failure ends them all: the others' next
    collective would wait for it in vain.
    """
    if in_multirun() and distributed.is_rank_zero():
        clear_job_notes()
    with distributed.failures_shared():
        datamodule = load_data(cfg.data)
        if in_multirun() and (reason := oversized(cfg.encoder.dim, datamodule.dim, datamodule.source.kind)):
            if distributed.is_rank_zero():
                log.warning(reason)
                write_job_note(SKIPPED_FILE, reason)
            return float("nan")
        with stop_signals_deferred():
            try:
                return fit_and_log(cfg, datamodule)
            except Exception as e:
                if not in_multirun() or distributed.world().size > 1:
                    raise
                known = explained(e, cfg.tracking.uri)
                line = f"FAILED {job_name(cfg)}: {known or f'{type(e).__name__}: {e}'}".splitlines()[0]
                log.error(line, exc_info=known is None)  # a bug keeps its traceback
                write_failure_note(line, disk_full=isinstance(known, DiskFull))
                return float("nan")


def fit_and_log(cfg: DictConfig, datamodule: VectorDataModule) -> float:
    """The job's MLflow run: fit the reducer, then score and log its candidates, the float32 one in the job's
    run and each other storage precision of `eval.precisions` in a child run (`cosine-d0064-int8`).

    A job whose config already has a FINISHED run on the same data in this sweep is skipped
    (`tracking.skip_finished`), so re-running a killed sweep with the same `hydra.sweep.dir` or
    `tracking.sweep_id` only does what is missing.
    """
    if not distributed.is_rank_zero():
        return train_beside_rank_zero(cfg, datamodule)
    from simreduce.evaluate.scoring import OriginalSide  # scipy, scikit-learn, MLflow: once the vectors are there
    from simreduce.experiment.candidates import CHILD_RUN, JOB_RUN, job_tags, log_candidate, log_setup
    from simreduce.experiment.selection import run_score
    from simreduce.experiment.tracking import TrackingStore, runs, sweeps

    store = TrackingStore.create(cfg.tracking.uri)
    experiment_id = store.experiment_id(cfg.tracking.experiment)
    sweep_id = cfg.tracking.sweep_id or current_sweep_id()
    sweeps.close_stale_runs(store, experiment_id, sweep_id)
    cfg_hash, data_id = runs.config_hash(cfg), datamodule.identity()
    name = job_name(cfg)
    done = cfg.tracking.skip_finished and sweeps.find_finished_run(store, experiment_id, sweep_id, cfg_hash, data_id)
    if distributed.agree(bool(done)):
        log.info("%s: skipped, run %s of sweep %s already finished this config", name, done.info.run_id, sweep_id)
        return run_score(done.data.metrics)

    reducer = build_reducer(cfg, datamodule.dim)  # a bad encoder setting fails before a run opens
    settings = instantiate(cfg.eval)
    tags = job_tags(cfg, datamodule, reducer, sweep_id, cfg_hash)
    log_model = cfg.tracking.log_model and not reducer.reference  # a reference has no served form
    # failures_shared: when another rank of a trainer=ddp job fails, its error is this run's.
    with runs.job_run(store, experiment_id, name, tags | JOB_RUN) as run, distributed.failures_shared():
        log_setup(run, cfg, datamodule)
        started = time.perf_counter()
        steps = fit(reducer, datamodule, cfg.trainer, run.lightning_logger())
        train_seconds = time.perf_counter() - started
        job_candidate, *others = reducer.candidates(settings.candidate_precisions)
        run.set_tag("precision", job_candidate.stored_form)
        # Scored against one original side, and each map applied once: its precisions share its output.
        original = OriginalSide(
            datamodule.vectors, datamodule.train_idx, datamodule.val_idx, settings, datamodule.fit_idx
        )
        reduce = functools.cache(lambda net: apply_net(net, datamodule.vectors))
        metrics = log_candidate(run, job_candidate, reduce(job_candidate.net), datamodule, original, log_model)
        run.log_metrics({"train_seconds": train_seconds})
        scores = [f"score={run_score(metrics):.5f}"]
        for candidate in others:  # children of the job's run, which stays MLflow's active run meanwhile
            child_tags = tags | {"precision": candidate.stored_form} | CHILD_RUN
            with runs.job_run(store, experiment_id, candidate.run_name, child_tags, nested=True) as child:
                log_setup(child, cfg, datamodule, candidate.dim)
                child_metrics = log_candidate(
                    child, candidate, reduce(candidate.net), datamodule, original, log_model, child=True
                )
            label = candidate.run_name.removeprefix(f"{name}-").removeprefix(f"{reducer.kind}-")  # int8, d0016-int8
            scores.append(f"{label} score={run_score(child_metrics):.5f}")

    trained = f"{steps} steps in {train_seconds:.1f} s" if reducer.trains else f"fitted in {train_seconds:.1f} s"
    log.info("%s: fit/rmse=%.5f %s (%s)", name, metrics["fit/rmse"], ", ".join(scores), trained)
    return run_score(metrics)


def train_beside_rank_zero(cfg: DictConfig, datamodule: VectorDataModule) -> float:
    """Another rank's part of a `trainer=ddp` job: the same start and its share of training, nothing logged or
    scored (rank 0 does both, alone); NaN, the score of a job that is not the one scored."""
    if distributed.agree(None):  # rank 0 found this config's run finished
        return float("nan")
    fit(build_reducer(cfg, datamodule.dim), datamodule, cfg.trainer)
    return float("nan")


def current_sweep_id() -> str:
    """Shared by every job of one `-m` sweep (Hydra's sweep dir), so selection can find them all."""
    from simreduce.experiment.tracking.sweeps import sweep_id_of

    if in_multirun():
        return sweep_id_of(HydraConfig.get().sweep.dir)
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
