"""How close each reducer of a sweep comes to the floor, and how far the cosine encoder is ahead.

    python train.py -m encoder=cosine,autoencoder,pca,svd,random encoder.dim=16,32,64,128,256
    python bench/floor.py [--sweep SWEEP_ID] [the sweep's other overrides, e.g. data.n_words=1000]

Reads the sweep's runs (default: the latest sweep) from the MLflow store, computes the floor of the same
training words (`simreduce.experiment.floor`), and prints two tables: fit rmse per (reducer, dim), and per dim
the encoder's loss over the floor and its advantage over the best classical reducer (losses are fit/rmse²,
the mean squared difference over training pairs that training minimises).
"""

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SIMREDUCE_ROOT", str(ROOT))

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from simreduce.experiment.floor import floor_table  # noqa: E402

CLASSICAL = ("pca", "svd", "random")
ORDER = ["cosine", "autoencoder", *CLASSICAL]
GOAL = 1.02


def sweep_runs(experiment: str, sweep_id: str | None) -> pd.DataFrame:
    """The finished runs of one sweep, the latest per (reducer, dim), with columns reducer, dim, rmse, seconds."""
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'", order_by=["start_time DESC"]
    )
    runs = runs[runs["tags.encoder"].notna()] if "tags.encoder" in runs else runs.iloc[:0]  # jobs, not summaries
    if "tags.precision" in runs:  # the jobs' own (float32) runs, not their candidates at other precisions
        runs = runs[runs["tags.precision"].fillna("float32") == "float32"]
    if runs.empty:
        raise SystemExit(f"no finished runs in experiment {experiment!r}: run a sweep first")
    sweep_id = sweep_id or runs["tags.sweep_id"].iloc[0]
    runs = runs[runs["tags.sweep_id"] == sweep_id]
    table = pd.DataFrame(
        {
            "reducer": runs["tags.encoder"],
            "dim": runs["params.encoder.dim"].astype(int),
            "rmse": runs["metrics.fit/rmse"],
            "seconds": runs["metrics.train_seconds"],
        }
    )
    print(f"sweep {sweep_id}: {len(table)} runs\n")
    return table.drop_duplicates(["reducer", "dim"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", help="sweep id (tag sweep_id); default: the latest sweep")
    parser.add_argument("overrides", nargs="*", help="the sweep's Hydra overrides other than encoder and dim")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args.overrides)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = sweep_runs(cfg.tracking.experiment, args.sweep)
    floors = pd.Series(floor_table(cfg, sorted(runs.dim.unique())), name="floor")

    rmse = runs.pivot(index="dim", columns="reducer", values="rmse")
    rmse = rmse[sorted(rmse.columns, key=lambda r: ORDER.index(r) if r in ORDER else len(ORDER))]
    rmse.insert(0, "floor", floors**0.5)
    print("fit rmse (training pairs)\n")
    print(rmse.to_string(float_format="{:.5f}".format), "\n")

    loss = runs.pivot(index="dim", columns="reducer", values="rmse") ** 2
    classical = loss[[c for c in CLASSICAL if c in loss]]
    summary = pd.DataFrame(
        {
            "floor loss": floors,
            "cosine loss": loss["cosine"],
            "cosine / floor": loss["cosine"] / floors,
            "best classical": classical.idxmin(axis=1),
            "classical / floor": classical.min(axis=1) / floors,
            "advantage (classical / cosine)": classical.min(axis=1) / loss["cosine"],
            "cosine train s": runs[runs.reducer == "cosine"].set_index("dim").seconds,
        }
    )
    print(summary.to_string(float_format="{:.5g}".format), "\n")
    met = bool((summary["cosine / floor"] <= GOAL).all())
    print(f"cosine within {GOAL - 1:.0%} of the floor at every dim: {'yes' if met else 'NO'}")


if __name__ == "__main__":
    main()
