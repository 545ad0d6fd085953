"""The settings every job reads, checked once before any job starts, and the sizes a sweep skips."""

import difflib
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from simreduce.experiment.alias_policy import check_register
from simreduce.experiment.console import quiet_dependencies
from simreduce.experiment.notes import hydra_verbose
from simreduce.experiment.selection import check_tolerance, make_target
from simreduce.reducers.base import method_kind, run_name
from simreduce.runtime import distributed
from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError


def check_settings(cfg: DictConfig) -> None:
    """Fail the run or the sweep in seconds, with one line and no MLflow run, on a typo: the source's ids first
    (before anything heavy is imported), then scoring, selection, a nested encoder's number of sizes and the
    trainer's accelerator. Sizes are checked per job, where the input width is known (a sweep skips those that
    are no reduction)."""
    source = instantiate(cfg.data).source
    source.ids()
    if export_to := OmegaConf.select(cfg, "select.export_to"):
        check_export(export_to, source.kind)
    settings = instantiate(cfg.eval)
    check_tolerance(cfg.select.tolerance)
    check_register(cfg.select.register)
    if target := make_target(cfg.select.metric, cfg.select.target):
        from simreduce.evaluate.scoring import logged_metric_names  # scipy, scikit-learn: once the data is known

        if target.metric not in (names := logged_metric_names(settings)):
            near = difflib.get_close_matches(target.metric, names, n=3) or ["heldout/recall_at_10", "heldout/rmse"]
            raise SimreduceError(
                f"select.metric={target.metric!r} is not a metric simreduce logs: did you mean "
                f"{' or '.join(map(repr, near))}? (a run logs {len(names)}; the MLflow UI lists them)"
            )
    from simreduce.reducers.nested import check_prefix_count  # torch: loaded by the data module by now

    check_prefix_count(OmegaConf.select(cfg, "encoder.dims"))  # a nested encoder's, before any job trains
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


def check_export(export_to: str, source_kind: str) -> None:
    """`select.export_to`, refused before any job when the winner could not be exported there."""
    from simreduce.experiment.export import check_folder

    if source_kind == "vectors":
        raise SimreduceError(
            f"select.export_to={export_to!r}: data=vectors has no embedder, so its winner cannot be a text model; "
            "drop select.export_to and reduce new vectors with `simreduce compress`."
        )
    check_folder(Path(export_to), "select.export_to=")


def oversized(dim: object, in_dim: int, source_kind: str) -> str | None:
    """Why `encoder.dim` is no reduction of `in_dim`-d vectors, or None when it is one (or not a size at all:
    the reducer's own check names a bad value). Vectors embedded here could come from a wider model; a file's
    vectors are what they are."""
    if is_positive_int(dim) and dim >= in_dim:
        way_out = (
            f"pick sizes below {in_dim} for this file"
            if source_kind == "vectors"
            else "such sizes reduce a wider model, e.g. embedder=deepseek_coder (2048-d)"
        )
        return f"encoder.dim={dim} skipped: not below the {in_dim}-d input; {way_out}"
    return None


def job_name(cfg: DictConfig) -> str:
    """The job's run name (`cosine-d0064`), or its overrides when the encoder config cannot name one."""
    try:
        return run_name(method_kind(get_class(cfg.encoder._target_).kind, cfg.encoder.get("loss")), cfg.encoder.dim)
    except Exception:  # a bad encoder target: the job fails on it, and is named by what the user typed
        return " ".join(HydraConfig.get().overrides.task)
