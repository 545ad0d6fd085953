"""What the tool costs beyond the work it does, as ratios measured in one run (issue 15's goals):

- the default sweep, warm, against `bench/plain_sweep.py` doing the same work in plain torch (goal <= 1.3x);
- the same sweep cold against warm (goal <= 1.2x);
- `simreduce compress` of 10 vectors against `python -c "import torch"` (goal <= 2x);
- how soon a missing words file is reported, against the same `import torch`.

Warm: a second sweep in the same project root (its MLflow store, matplotlib's font cache and the `.pyc`
files exist) with the vector cache emptied, so that it embeds the words as the plain script does. Cold: a
new project root (a new store and vector cache), a new matplotlib cache folder and simreduce's own `.pyc`
files removed, which is what a fresh clone's first sweep pays (pip compiles site-packages at install).
Every figure is one process's wall time from outside, best of `repeats` where it is cheap to repeat.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT_ROOT, print_table

TEN_VECTORS = 10


def wall(command: list[str], env: dict[str, str], check: bool = True) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def steps_per_dim(root: Path) -> dict[int, int]:
    """The training steps each size of the latest sweep took, read back from its store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.encoder = 'cosine'")
    latest = max(r.data.tags["sweep_id"] for r in runs)
    return {
        int(r.data.params["encoder.dim"]): max(m.step for m in client.get_metric_history(r.info.run_id, "train/loss"))
        for r in runs
        if r.data.tags["sweep_id"] == latest and r.data.tags.get("precision", "float32") == "float32"  # trained runs
    }


def run(dims: str, repeats: int) -> dict[str, float]:
    python = sys.executable
    sweep = [python, "train.py", "-m", f"encoder.dim={dims}"]
    with tempfile.TemporaryDirectory(prefix="simreduce-overhead-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "SIMREDUCE_ROOT": str(tmp / "project"), "MPLCONFIGDIR": str(tmp / "mpl")}
        for pycache in (PROJECT_ROOT / "src").rglob("__pycache__"):
            shutil.rmtree(pycache)
        load_before = os.getloadavg()[0]
        cold = wall(sweep, env)
        warm_runs = []
        for _ in range(repeats):
            shutil.rmtree(tmp / "project" / ".cache")
            warm_runs.append(wall(sweep, env))
        warm = min(warm_runs)
        steps = steps_per_dim(tmp / "project")
        (tmp / "plain").mkdir()
        plain_command = [python, "bench/plain_sweep.py", str(tmp / "plain"), "--dims", dims]
        plain_command += ["--steps", ",".join(str(steps[int(d)]) for d in dims.split(","))]
        plain = min(wall(plain_command, env) for _ in range(repeats))

        import numpy as np

        np.save(tmp / "ten.npy", np.random.default_rng(0).normal(size=(TEN_VECTORS, 384)).astype(np.float32))
        compress = [python, "-m", "simreduce.cli", "compress", "--model", "models:/simreduce-words-minilm@winner"]
        compress += ["--input", str(tmp / "ten.npy"), "--output", str(tmp / "out.npy")]
        import_torch = [python, "-c", "import torch"]
        bad_words = [python, "train.py", f"data.words_file={tmp / 'no-such-words.txt'}"]
        torch_s, compress_s, bad_words_s = [], [], []
        for _ in range(repeats):  # alternated, so load from elsewhere falls on both sides
            torch_s.append(wall(import_torch, env))
            compress_s.append(wall(compress, env))
            bad_words_s.append(wall(bad_words, env, check=False))
        load_after = os.getloadavg()[0]

    torch_best = min(torch_s)
    rows = [
        [
            f"sweep warm vs plain torch (steps {steps})",
            f"{warm:.1f}",
            f"{plain:.1f}",
            f"{warm / plain:.2f}x",
            "<= 1.3x",
        ],
        ["sweep cold vs warm", f"{cold:.1f}", f"{warm:.1f}", f"{cold / warm:.2f}x", "<= 1.2x"],
        [
            f"compress {TEN_VECTORS} vectors vs `import torch`",
            f"{min(compress_s):.1f}",
            f"{torch_best:.1f}",
            f"{min(compress_s) / torch_best:.2f}x",
            "<= 2x",
        ],
        [
            "missing words file reported vs `import torch`",
            f"{min(bad_words_s):.1f}",
            f"{torch_best:.1f}",
            f"{min(bad_words_s) / torch_best:.2f}x",
            "before MLflow's import",
        ],  # fmt: skip
    ]
    print_table(
        f"Overhead of `train.py -m encoder.dim={dims}` and `simreduce compress` (load average {load_before:.1f} "
        f"before, {load_after:.1f} after)",
        ["what", "seconds", "against (s)", "ratio", "goal"],
        rows,
        note=f"best of {repeats} for warm, plain, compress and import torch; cold is one run.",
    )
    return {"warm": warm, "cold": cold, "plain": plain, "compress": min(compress_s), "import_torch": torch_best}
