"""The settings every job reads, checked once before any job starts, and the sizes a sweep skips."""

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from simreduce.experiment.alias_policy import check_register
from simreduce.experiment.console import quiet_dependencies
from simreduce.experiment.notes import hydra_verbose
from simreduce.experiment.selection import check_tolerance, make_target
from simreduce.reducers.base import run_name
from simreduce.runtime import distributed
from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError


def check_settings(cfg: DictConfig) -> None:
    """Fail the run or the sweep in seconds, with one line and no MLflow run, on a typo: the source's ids first
    (before anything heavy is imported), then scoring, selection, a nested encoder's number of sizes and the
    trainer's accelerator. Sizes are checked per job, where the input width is known (a sweep skips those that
    are no reduction)."""
    instantiate(cfg.data).source.ids()
    instantiate(cfg.eval)
    check_tolerance(cfg.select.tolerance)
    check_register(cfg.select.register)
    make_target(cfg.select.metric, cfg.select.target)
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


def oversized(dim: object, in_dim: int) -> str | None:
    """Why `encoder.dim` is no reduction of `in_dim`-d vectors, or None when it is one (or not a size at all:
    the reducer's own check names a bad value)."""
    if is_positive_int(dim) and dim >= in_dim:
        return (
            f"encoder.dim={dim} skipped: not below the {in_dim}-d input; such sizes reduce a wider model, "
            "e.g. embedder=deepseek_coder (2048-d)"
        )
    return None


def job_name(cfg: DictConfig) -> str:
    """The job's run name (`cosine-d0064`), or its overrides when the encoder config cannot name one."""
    try:
        return run_name(get_class(cfg.encoder._target_).kind, cfg.encoder.dim)
    except Exception:  # a bad encoder target: the job fails on it, and is named by what the user typed
        return " ".join(HydraConfig.get().overrides.task)
