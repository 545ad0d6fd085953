"""One `train.py` job in one process against the same job over two (`torchrun --nproc_per_node=2 ... trainer=ddp`,
gloo on the CPU): wall time, and whether the two agree (the cache of embedded texts, the trained weights, fit/rmse).

Texts: `data=texts` with the packaged MiniLM and `encoder=pca` (nothing to train: the job is the embedding), then
vectors: `data=vectors` with mini-batch Adam. One process gets torch's threads (one per core), each of two processes
one thread (torchrun's default), so both use the whole machine.

    python bench/run.py --only ddp           # about 3 minutes on 2 cores
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import PROJECT_ROOT, anisotropic_vectors, print_table
from safetensors.torch import load_file

TOPICS = ["cooking", "football", "stock markets", "gardening", "astronomy", "music", "law", "sailing"]
JOB_LINE = re.compile(r"fit/rmse=(?P<rmse>[0-9.]+).*?\((?:(?P<steps>\d+) steps in (?P<train>[0-9.]+) s|fitted)")


def timed_job(args: list[str], root: Path, processes: int) -> dict:
    """`train.py ARGS` in `processes` processes (torchrun above one), with `root` as its project root."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "SIMREDUCE_ROOT": str(root)}
    started = time.perf_counter()
    done = subprocess.run([*launcher, "train.py", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} in {processes} process(es) failed:\n{done.stderr[-3000:]}")
    found = JOB_LINE.search(done.stdout + done.stderr)
    return {"wall": wall, "root": root, **{k: v for k, v in found.groupdict().items() if v is not None}}


def only_file(root: Path, folder: str, pattern: str) -> dict:
    (path,) = (root / folder).rglob(pattern)
    return load_file(path)


def max_difference(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k].numpy() - b[k].numpy()).max()) for k in a)


def run(n_texts: int = 2000, n_vectors: int = 20_000, d: int = 384, dim: int = 64, steps: int = 300) -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="simreduce-ddp-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        corpus.write_text(
            "".join(f"Note {i} is about {TOPICS[i % 8]}, then {TOPICS[i * 5 % 8]}.\n" for i in range(n_texts))
        )
        texts = ["data=texts", f"data.path={corpus}", "encoder=pca", f"encoder.dim={dim}", "eval.precisions=[float32]"]
        vectors_path = tmp / "vectors.npy"
        np.save(vectors_path, anisotropic_vectors(n_vectors, d).numpy())
        vectors = ["data=vectors", f"data.path={vectors_path}", f"encoder.dim={dim}", f"encoder.steps={steps}"]
        vectors += ["trainer.accelerator=cpu", "data.batch_size=1024", "eval.precisions=[float32]"]
        rows = []
        for name, args in (("texts", texts), ("vectors", vectors)):
            one = timed_job([*args, "trainer.accelerator=cpu"], tmp / f"{name}-1", 1)
            two = timed_job([*args, "trainer=ddp", "trainer.accelerator=cpu"], tmp / f"{name}-2", 2)
            if name == "texts":
                cache = [only_file(run["root"], ".cache/vectors", "*.safetensors") for run in (one, two)]
                agree = f"cache max abs diff {max_difference(*cache):.1e}"
                speed = [f"{n_texts / run['wall']:.0f} texts/s (whole job)" for run in (one, two)]
            else:
                weights = [only_file(run["root"], "mlruns/artifacts", "weights.safetensors") for run in (one, two)]
                agree = f"weights max abs diff {max_difference(*weights):.1e}"
                speed = [f"{1000 * float(run['train']) / int(run['steps']):.1f} ms/step" for run in (one, two)]
            for processes, run_, rate in ((1, one, speed[0]), (2, two, speed[1])):
                rows.append([name, processes, f"{run_['wall']:.1f} s", rate, run_["rmse"], agree])
    print_table(
        f"one job in 1 and 2 processes: {n_texts} texts (MiniLM, pca to {dim}); {n_vectors:,} x {d} vectors "
        f"(Adam, batch 1024, {steps} steps, dim {dim})",
        ["data", "processes", "wall", "speed", "fit/rmse", "agreement 1 vs 2"],
        rows,
        note=f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.",
    )


if __name__ == "__main__":
    run()
