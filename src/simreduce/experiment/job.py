"""One Hydra job, top to bottom: source -> data -> reducer.fit -> candidates -> evaluate -> log.

The vectors come first, with nothing heavier than torch, Lightning and transformers imported: a bad word list
or an unloadable model fails before MLflow is imported or a run is opened.
"""

import functools
import logging
import signal
import time
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from simreduce.evaluate.scoring import OriginalSide
from simreduce.experiment.console import quiet_dependencies
from simreduce.reducers.base import Candidate, Reducer, apply_net, is_positive_int, run_name
from simreduce.reducers.precision import StoredPrecision
from simreduce.runtime import distributed
from simreduce.runtime.errors import SimreduceError, StopRequested, find_user_error
from simreduce.runtime.signals import raise_if_stop_requested, stop_signals_deferred
from simreduce.vectors.data import VectorDataModule, load_data

log = logging.getLogger(__name__)

# In a job's Hydra output dir, the line the sweep's end repeats: why it skipped its size, or how it failed.
SKIPPED_FILE = "skipped.txt"
FAILED_FILE = "failed.txt"


def in_multirun() -> bool:
    """Whether this job is one of a Hydra `-m` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(cfg: DictConfig) -> float:
    """Train (or fit) one reducer, log each of its candidates to MLflow, and return the selection score.

    In a sweep, a size at or above the input width is skipped before any run is opened (the README's sweep
    over 16..1024 reduces 2048-d models and meets 384-d ones too), with one line here and one in the sweep's
    summary; a job that fails inside its run (its MLflow run is then FAILED, with the error) is reported and
    scored NaN so the other sizes still run and the summary names it; a bad word list or model fails every
    job alike, so it stops the sweep at once.
    """
    with distributed.failures_shared():
        datamodule = load_data(cfg.data)
        if in_multirun() and (reason := oversized(cfg.encoder.dim, datamodule.dim)):
            if distributed.is_rank_zero():
                log.warning(reason)
                write_job_note(SKIPPED_FILE, reason)
            return float("nan")
        with stop_signals_deferred():
            return fit_and_log_noted(cfg, datamodule)


def fit_and_log_noted(cfg: DictConfig, datamodule: VectorDataModule) -> float:
    """`fit_and_log`; in a sweep of one-process jobs, a failure is noted and scored NaN (see `run_job`). Over
    several processes a failure ends them all: the others' next collective would wait for it in vain."""
    try:
        return fit_and_log(cfg, datamodule)
    except Exception as e:
        if not in_multirun() or distributed.world().size > 1:
            raise
        user_error = find_user_error(e)
        line = f"FAILED {job_name(cfg)}: {user_error or f'{type(e).__name__}: {e}'}".splitlines()[0]
        log.error(line, exc_info=user_error is None)  # a bug keeps its traceback
        write_job_note(FAILED_FILE, line)
        return float("nan")


def check_settings(cfg: DictConfig) -> None:
    """The settings every job reads, checked once before any job starts, so a typo fails the run or the sweep
    in seconds with one line and leaves no MLflow run: the source's ids first (before anything heavy is
    imported), then scoring, selection and the trainer's accelerator. Sizes are checked per job, where the
    input width is known (a sweep skips those that are no reduction)."""
    from simreduce.experiment.alias_policy import check_register
    from simreduce.experiment.selection import check_tolerance, make_target

    instantiate(cfg.data).source.ids()
    instantiate(cfg.eval)
    check_tolerance(cfg.select.tolerance)
    check_register(cfg.select.register)
    make_target(cfg.select.metric, cfg.select.target)
    if (processes := distributed.world().size) > 1 and OmegaConf.select(cfg, "trainer.strategy") in (None, "auto"):
        raise SimreduceError(
            f"this job was started as {processes} processes (torchrun or srun), but trainer.strategy trains in one: "
            "add trainer=ddp."
        )
    with quiet_dependencies(verbose=hydra_verbose()):
        try:
            instantiate(cfg.trainer, logger=False, enable_progress_bar=False, callbacks=[])
        except Exception as e:  # Hydra wraps what Lightning raised (no such accelerator, an unknown key)
            cause = str(e.__cause__ or e).strip().splitlines()[0]
            raise SimreduceError(f"the trainer settings do not build a Trainer ({cause}): check trainer.*") from e


def job_name(cfg: DictConfig) -> str:
    """The job's run name (`cosine-d0064`), or its overrides when the encoder config cannot name one."""
    try:
        return run_name(get_class(cfg.encoder._target_).kind, cfg.encoder.dim)
    except Exception:  # a bad encoder target: the job fails on it, and is named by what the user typed
        return " ".join(HydraConfig.get().overrides.task)


def write_job_note(file_name: str, line: str) -> None:
    """One line in this job's Hydra output dir, for the sweep's end to repeat (`job_notes`)."""
    (Path(HydraConfig.get().runtime.output_dir) / file_name).write_text(line + "\n")


def oversized(dim: object, in_dim: int) -> str | None:
    """Why `encoder.dim` is no reduction of `in_dim`-d vectors, or None when it is one (or not a size at all:
    the reducer's own check names a bad value)."""
    if is_positive_int(dim) and dim >= in_dim:
        return (
            f"encoder.dim={dim} skipped: not below the {in_dim}-d input; such sizes reduce a wider model, "
            "e.g. embedder=deepseek_coder (2048-d)"
        )
    return None


def job_notes(sweep_dir: str | Path, file_name: str) -> list[str]:
    """The lines the jobs of a sweep left in `file_name` (`SKIPPED_FILE`, `FAILED_FILE`), in job order."""
    found = Path(sweep_dir).glob(f"*/{file_name}")
    return [p.read_text().strip() for p in sorted(found, key=lambda p: (len(p.parent.name), p.parent.name))]


class StopAtSignal(pl.Callback):
    """Ends training at the step after a stop signal, where no MLflow call is half done (see `signals.py`).

    Lightning checks for SIGTERM itself a little later in the same step and raises `SIGTERMException`, a
    `SystemExit` with status 0; `train` turns that into `StopRequested` too."""

    def on_train_batch_end(self, *args) -> None:
        raise_if_stop_requested()


def train(reducer: Reducer, datamodule: VectorDataModule, trainer_cfg: DictConfig, logger=False) -> int:
    """Lightning's fit loop on `reducer`, its curves written by `logger`; returns the steps it took."""
    with quiet_dependencies(verbose=hydra_verbose()):
        trainer = instantiate(trainer_cfg, logger=logger)
        trainer.callbacks.append(StopAtSignal())
        try:
            trainer.fit(reducer, datamodule=datamodule)
        except SIGTERMException:
            raise StopRequested(signal.SIGTERM) from None
    return trainer.global_step


def hydra_verbose() -> bool:
    """Whether Hydra was asked for everything (`hydra.verbose=true`, or a list of loggers)."""
    return HydraConfig.initialized() and bool(HydraConfig.get().verbose)


def fit_and_log(cfg: DictConfig, datamodule: VectorDataModule) -> float:
    """The job's MLflow run: fit the reducer, then score and log its candidates, the float32 one in the job's
    run and each other storage precision of `eval.precisions` in a child run (`cosine-d0064-int8`).

    A job whose config already has a FINISHED run in this sweep is skipped (`tracking.skip_finished`), so
    re-running a killed sweep with the same `hydra.sweep.dir` or `tracking.sweep_id` only does what is missing.
    """
    if not distributed.is_rank_zero():
        return train_beside_rank_zero(cfg, datamodule)
    from simreduce.experiment.selection import run_score
    from simreduce.experiment.tracking import TrackingStore, runs, sweeps  # MLflow: only once the vectors are there
    from simreduce.experiment.tracking.sweeps import JOB_RUN_TAG

    store = TrackingStore.create(cfg.tracking.uri)
    experiment_id = store.experiment_id(cfg.tracking.experiment)
    sweep_id = cfg.tracking.sweep_id or current_sweep_id()
    sweeps.close_stale_runs(store, experiment_id, sweep_id)
    cfg_hash = runs.config_hash(cfg)
    kind = get_class(cfg.encoder._target_).kind
    name = run_name(kind, cfg.encoder.dim)
    done = cfg.tracking.skip_finished and sweeps.find_finished_run(store, experiment_id, sweep_id, cfg_hash)
    if distributed.agree(bool(done)):
        log.info("%s: skipped, run %s of sweep %s already finished this config", name, done.info.run_id, sweep_id)
        return run_score(done.data.metrics)

    tags = {
        "sweep_id": sweep_id,
        "embedder": cfg.embedder.name,
        "source": datamodule.source.kind,
        "data_name": datamodule.name,
        "data_id": datamodule.identity(),
        "encoder": kind,
        "config_hash": cfg_hash,
        "git_commit": runs.git_commit(Path(__file__).parent),  # of a checkout; "unknown" from a wheel
        **runs.process_tags(),
    }
    reducer = build_reducer(cfg, datamodule)  # a bad encoder setting fails before a run opens
    settings = instantiate(cfg.eval)
    # At or above the rank of the training set a reducer can reach zero fit loss trivially.
    tags["degenerate"] = str(reducer.dim >= len(datamodule.train_idx)).lower()
    tags["reference"] = str(reducer.reference).lower()
    log_model = cfg.tracking.log_model and not reducer.reference  # a reference has no served form
    job_tags = tags | {JOB_RUN_TAG: "true"}  # its `precision` once its candidates say it (none yet: float32)
    # failures_shared: when another rank of a trainer=ddp job fails, its error is this run's.
    with runs.job_run(store, experiment_id, name, job_tags) as run, distributed.failures_shared():
        log_setup(run, cfg, datamodule)
        started = time.perf_counter()
        reducer.fit(datamodule.fit_vectors)
        raise_if_stop_requested()
        steps = train(reducer, datamodule, cfg.trainer, run.lightning_logger()) if reducer.trains else 0
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
            child_tags = tags | {"precision": candidate.stored_form, JOB_RUN_TAG: "false"}
            with runs.job_run(store, experiment_id, candidate.run_name, child_tags, nested=True) as child:
                log_setup(child, cfg, datamodule, candidate.dim)
                child_metrics = log_candidate(child, candidate, reduce(candidate.net), datamodule, original, log_model)
            label = candidate.run_name.removeprefix(f"{name}-").removeprefix(f"{kind}-")  # int8, d0016, d0016-int8
            scores.append(f"{label} score={run_score(child_metrics):.5f}")

    trained = f"{steps} steps in {train_seconds:.1f} s" if reducer.trains else f"fitted in {train_seconds:.1f} s"
    log.info("%s: fit/rmse=%.5f %s (%s)", name, metrics["fit/rmse"], ", ".join(scores), trained)
    return run_score(metrics)


def build_reducer(cfg: DictConfig, datamodule: VectorDataModule) -> Reducer:
    """The configured reducer for the data's width, seeded: every rank of a `trainer=ddp` job builds the same."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return instantiate(cfg.encoder, in_dim=datamodule.dim)


def train_beside_rank_zero(cfg: DictConfig, datamodule: VectorDataModule) -> float:
    """Another rank's part of a `trainer=ddp` job: the same start and its share of training, nothing logged or
    scored (rank 0 does both, alone); NaN, the score of a job that is not the one scored."""
    if distributed.agree(None):  # rank 0 found this config's run finished
        return float("nan")
    reducer = build_reducer(cfg, datamodule)
    reducer.fit(datamodule.fit_vectors)
    if reducer.trains:
        train(reducer, datamodule, cfg.trainer)
    return float("nan")


def log_setup(run, cfg: DictConfig, datamodule: VectorDataModule, dim: int | None = None) -> None:
    """What every run of a job holds, whichever candidate it scores: the config (its `encoder.dim` is what
    selection reads: `dim`, the candidate's size when it is not the job's, a nested encoder's prefix; its
    `config.yaml` what compress embeds new words or texts with) and the data's sizes."""
    if dim is not None and dim != cfg.encoder.dim:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.encoder.dim = dim
    run.log_config(cfg)
    run.log_params(
        {"n_vectors": len(datamodule.ids), "input_dim": datamodule.dim, "n_fit_rows": len(datamodule.fit_idx)}
    )


def log_candidate(
    run,
    candidate: Candidate,
    reduced: torch.Tensor,
    datamodule: VectorDataModule,
    original: OriginalSide,
    log_model: bool,
) -> dict:
    """Score `candidate` (its map's output `reduced`) as it would be stored (int8 calibrated on the rows a fit
    sees) against the job's `OriginalSide` on every pair set and log its metrics, the study's three charts, the
    arrays the sweep's charts are drawn from, and (`log_model`) its map and stored form as an MLflow model.
    Returns the metrics."""
    from simreduce.evaluate import plots
    from simreduce.evaluate.scoring import score_reduction  # looked up per call: bench/timed_run.py times it

    stored = StoredPrecision.calibrated(candidate.precision, reduced, datamodule.fit_idx)
    bytes_per_vector = candidate.code_bytes or stored.bytes_per_vector(candidate.dim)
    scores = score_reduction(original, stored.comparable(reduced), bytes_per_vector=bytes_per_vector)
    raise_if_stop_requested()
    run.log_metrics(scores.metrics)
    fit = scores.pairs["fit"]
    label = plots.candidate_label(candidate.kind, candidate.dim, candidate.stored_form)
    run.log_figures(
        plots.study_charts(fit.original, f"original {datamodule.dim}", {label: fit.reduced}, {label: fit.diff})
    )
    run.log_array(fit.diff, "diffs/fit.npy")
    run.log_array(fit.original, "similarities/fit_original.npy")
    if log_model:
        with quiet_dependencies(verbose=hydra_verbose()):
            run.log_model(candidate.net, stored, datamodule.vectors[:8], candidate.prefix_dims)
    return scores.metrics


def current_sweep_id() -> str:
    """Shared by every job of one `-m` sweep (Hydra's sweep dir), so selection can find them all."""
    from simreduce.experiment.tracking.sweeps import sweep_id_of

    if in_multirun():
        return sweep_id_of(HydraConfig.get().sweep.dir)
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
