"""A project as the tests drive it: composed configs shrunk to seconds, `python ...` subprocesses with their own
project root (MLflow store, vector cache), and the runs read back from that store."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from simreduce.experiment.config import CONFIG_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHARTS = {"plots/base_distributions.png", "plots/difference_distribution.png", "plots/base_and_difference.png"}
CHILD_CHARTS = {"plots/base_and_difference.png"}  # a candidate beside its job's run: the stacked chart alone


def tiny_overrides(model: Path, words: Path) -> list[str]:
    """Shrink the default config to seconds: tiny model, few words, few steps, CPU, float32 candidates only (a
    test of other precisions asks for them)."""
    return [
        f"embedder.name_or_path={model}",
        "embedder.name=tiny",
        f"data.words_file={words}",
        "encoder.steps=40",
        "trainer.accelerator=cpu",
        "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=10",
        "tracking.log_model=false",
        "eval.precisions=[float32]",
    ]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def project_env(root: Path, **env: str) -> dict[str, str]:
    """The environment of a subprocess whose project root (MLflow store, cache) is `root`."""
    return {**os.environ, "SIMREDUCE_ROOT": str(root), **env}


STRAY = ("mlruns", "mlflow.db", "multirun", "outputs", ".cache")  # what a run may leave only under its root


def run_python(args: list[str], root: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS` with `root` as SIMREDUCE_ROOT (its own MLflow store and cache), started as a user would from
    a folder of their own (`root/elsewhere`, `train.py` named by its path), which it must leave as it was: a store
    or cache made there would be a path that followed the working dir instead of the project root."""
    cwd = root / "elsewhere"
    cwd.mkdir(parents=True, exist_ok=True)
    args = [str(PROJECT_ROOT / "train.py") if arg == "train.py" else arg for arg in args]
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=project_env(root, **env)
    )
    stray = sorted(p.name for p in cwd.iterdir() if p.name in STRAY)
    assert not stray, f"`python {' '.join(args)}` left {stray} in its working dir {cwd}"
    return done


def tiny_sweep(model: Path, words: Path, sweep_dir: Path | str, *overrides: str) -> list[str]:
    """`train.py -m` on the tiny setup; an override here replaces the tiny default of the same key."""
    merged = dict(o.split("=", 1) for o in [*tiny_overrides(model, words), *overrides])
    return ["train.py", "-m", *(f"{k}={v}" for k, v in merged.items()), f"hydra.sweep.dir={sweep_dir}"]


def seed_store(root: Path, empty_store: Path) -> Path:
    """`root` as a project root whose MLflow store already has its schema, a copy of `empty_store`: making one
    costs seconds, copying it milliseconds."""
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    shutil.copy(empty_store, root / "mlruns" / "mlflow.db")
    return root


def store_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def use_store(root: Path) -> None:
    """Point MLflow's fluent API and default client at the store under `root`, registry included (an earlier
    test in this process may have left the registry pointing at its own store)."""
    mlflow.set_tracking_uri(store_uri(root))
    mlflow.set_registry_uri(store_uri(root))


def store_runs(root: Path, experiment: str = "simreduce-tiny") -> pd.DataFrame:
    """Every run of `experiment` in the store under `root`, oldest first (empty if there is none yet)."""
    use_store(root)
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame(columns=["run_id", "status", "tags.mlflow.runName"])
    return mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"])


def job_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The sweep's jobs, without its `sweep-<id>` summary run or their candidates' child runs (other storage
    precisions, `cosine-d0004-int8`; other prefixes of a nested encoder, `nested-d0004`)."""
    return runs[~runs["tags.mlflow.runName"].str.startswith("sweep-") & (runs["tags.job_run"] == "true")]


def artifact_paths(run_id: str, folder: str | None = None) -> set[str]:
    """Every artifact file of a run, as paths relative to its artifact root."""
    paths = set()
    for item in mlflow.MlflowClient().list_artifacts(run_id, folder):
        paths |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return paths


def sweep_end_config(root, sweep_dir) -> DictConfig:
    """The parts of a sweep's config its end callback reads."""
    return OmegaConf.create(
        {
            "tracking": {"uri": store_uri(root), "sweep_id": None},
            "select": compose_config([]).select,  # the defaults, whatever keys they have
            "hydra": {"sweep": {"dir": str(sweep_dir)}},
        }
    )
