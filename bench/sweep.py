"""The default sweep end to end (5 sizes, default model, 512 words) on a fresh MLflow store and vector
cache, its wall time split into imports, embedding, training, evaluation and logging."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, print_table

PHASES = ["embedding", "training", "evaluation", "logging", "other"]


def timed_train(args: list[str], root: Path) -> tuple[float, int, dict]:
    """Run `bench/timed_run.py` with train.py `args` under project root `root`.

    Returns (wall seconds including interpreter start, the process's peak RSS in bytes, its phase times).
    """
    times = root / "times.json"
    env = {**os.environ, "SIMREDUCE_ROOT": str(root), "TQDM_DISABLE": "1"}
    command = [sys.executable, str(PROJECT_ROOT / "bench" / "timed_run.py"), str(times), *args]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    return wall, usage.ru_maxrss * 1024, json.loads(times.read_text())


def print_logged_runs(root: Path) -> None:
    """What each run logged, to check that the timed runs did the work: steps, scores, train_seconds."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    rows = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        steps = max((m.step for m in client.get_metric_history(run.info.run_id, "train/loss")), default=0)
        metrics = run.data.metrics
        scores = [f"{metrics[k]:.4f}" if k in metrics else "" for k in ("fit/rmse", "heldout/rmse")]
        rows.append([run.info.run_name, run.info.status, steps, *scores, f"{metrics.get('train_seconds', 0):.1f}"])
    print_table(
        "Runs in the store",
        ["run", "status", "last logged step", "fit/rmse", "heldout/rmse", "train_seconds"],
        rows,
    )


def grouped(span: dict) -> dict[str, float]:
    """A span's phases with the `logging: ...` parts added into `logging`, and `other` the rest of its wall."""
    out = dict.fromkeys(PHASES, 0.0)
    for name, value in span.items():
        if name not in ("wall", "other"):
            out[name.split(":")[0]] += value
    out["other"] = span["wall"] - sum(out.values())
    return out


def print_split(title: str, wall: float, times: dict, note: str = "") -> None:
    spans = [times["start_up"], *times["jobs"], times["finish"]]
    columns = ["Hydra start", *[f"job {i}" for i in range(len(times["jobs"]))], "Hydra end"]
    phases = [grouped(span) for span in spans]
    rows = [["imports", f"{times['imports']:.2f}", *[""] * len(spans)]]
    for phase in PHASES:
        rows.append([phase, f"{sum(p[phase] for p in phases):.2f}", *[f"{p[phase]:.2f}" for p in phases]])
    rows.append(["wall", f"{wall:.2f}", *[f"{span['wall']:.2f}" for span in spans]])
    print_table(title, ["seconds", "total", *columns], rows, note)


def print_logging_detail(times: dict) -> None:
    spans = [times["start_up"], *times["jobs"], times["finish"]]
    names = sorted({n for span in spans for n in span if n.startswith("logging")})
    rows = [[n, *[f"{span.get(n, 0.0):.3f}" for span in spans]] for n in names]
    columns = ["Hydra start", *[f"job {i}" for i in range(len(times["jobs"]))], "Hydra end"]
    print_table("Logging, part by part (s)", ["part", *columns], rows)


def per_job_overhead(jobs: list[dict]) -> tuple[float, float]:
    """Mean over the jobs after the first of (wall - training), and of the part of it that is fixed:
    without evaluation, charts and model export, i.e. Hydra's job set-up, cache read, MLflow run."""
    later = jobs[1:]
    beyond_training = [j["wall"] - j.get("training", 0.0) for j in later]
    fixed = [
        b - j.get("evaluation", 0.0) - j.get("logging: charts", 0.0) - j.get("logging: model", 0.0)
        for b, j in zip(beyond_training, later, strict=True)
    ]
    return sum(beyond_training) / len(later), sum(fixed) / len(later)


def run(dims: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="simreduce-bench-") as tmp:
        root = Path(tmp)
        args = ["-m", f"encoder.dim={dims}", f"hydra.sweep.dir={root / 'multirun'}", *extra]
        wall, peak_rss, times = timed_train(args, root)
        print_logged_runs(root)
    print_split(
        f"Sweep `train.py -m encoder.dim={dims} {' '.join(extra)}`, fresh MLflow store and vector cache",
        wall,
        times,
        note="Job 0 embeds the words (cache miss), later jobs read the cache. `other`: Hydra's set-up of the "
        "job, the reducer's construction, anything the wrappers do not name. `total` wall includes the "
        "interpreter's start.",
    )
    print_logging_detail(times)
    beyond, fixed = per_job_overhead(times["jobs"])
    print(
        f"\nper-job overhead after the first: {beyond:.2f} s beyond training, of which {fixed:.2f} s fixed "
        f"(no evaluation, charts or model export); peak RSS {peak_rss / 2**20:.0f} MiB"
    )
    return {"wall": wall, "times": times, "overhead": beyond, "fixed_overhead": fixed, "peak_rss": peak_rss}
