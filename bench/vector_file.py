"""A file of 1,000,000 x 768 float32 vectors (3 GB) through `train.py -m data=vectors` (one size) and then
`simreduce compress`, with wall time and peak anonymous memory.

Anonymous memory is what the process itself allocates: `RssAnon` of /proc/<pid>/status (VmRSS minus the
file-backed and shared pages), sampled every 50 ms. The mapped file's pages are the page cache's and do not
count; `peak RSS` beside it includes them. The file is synthetic (common.anisotropic_vectors), written once
through a memory map.

    python bench/run.py --only vector_file        # about 10 minutes on 2 cores, 3 GB of disk in /tmp
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import PROJECT_ROOT, anisotropic_vectors, print_table


def write_vectors(path: Path, n: int, d: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    anisotropic_vectors(n, d, out=torch.from_numpy(out))
    out.flush()
    del out


def memory_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of a live process, in KiB; (0, 0) once it is gone (an exited process that is not yet
    reaped has no memory lines)."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["RssAnon"].split()[0]), int(fields["VmRSS"].split()[0])
    except (OSError, ValueError, KeyError):
        return 0, 0


def measured(args: list[str], root: Path) -> dict:
    """Run `python ARGS` from the project with `root` as its project root; its wall time and peak memory."""
    env = {**os.environ, "SIMREDUCE_ROOT": str(root)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peaks = [0, 0]

    def sample() -> None:
        while process.poll() is None:
            for i, kib in enumerate(memory_kib(process.pid)):
                peaks[i] = max(peaks[i], kib)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.communicate()[0]
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"wall": time.perf_counter() - started, "anon": peaks[0] * 1024, "rss": peaks[1] * 1024, "out": output}


def run(n: int = 1_000_000, d: int = 768, dim: int = 64, extra: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory(prefix="simreduce-vector-file-") as tmp:
        root = Path(tmp)
        path = root / "vectors.npy"
        write_seconds = time.perf_counter()
        write_vectors(path, n, d)
        write_seconds = time.perf_counter() - write_seconds
        load_before = os.getloadavg()[0]
        train = measured(["train.py", "-m", "data=vectors", f"data.path={path}", f"encoder.dim={dim}", *extra], root)
        model = "models:/simreduce-vectors-vectors/1"
        out = root / "reduced.npy"
        compress = measured(
            ["-m", "simreduce.cli", "compress", "--model", model, "--input", str(path), "--output", str(out)], root
        )
        reduced_shape = np.load(out, mmap_mode="r").shape
        load_after = os.getloadavg()[0]
    gib = 2**30
    print_table(
        f"{n:,} x {d} float32 vectors in a .npy file ({n * d * 4 / 1e9:.1f} GB, written in {write_seconds:.0f} s), "
        f"encoder.dim={dim}",
        ["step", "wall", "peak anonymous memory", "peak RSS (with the mapped file)", "goal"],
        [
            [
                "train.py -m: train + evaluate + log + select",
                f"{train['wall']:.0f} s",
                f"{train['anon'] / gib:.2f} GiB",
                f"{train['rss'] / gib:.2f} GiB",
                "<= 10 min, <= 2 GB",
            ],
            [
                f"simreduce compress -> {list(reduced_shape)}",
                f"{compress['wall']:.0f} s",
                f"{compress['anon'] / gib:.2f} GiB",
                f"{compress['rss'] / gib:.2f} GiB",
                "<= 1 GB",
            ],
        ],  # fmt: skip
        note=f"load average {load_before:.1f} before, {load_after:.1f} after.",
    )
    return {"train": train, "compress": compress}


if __name__ == "__main__":
    run()
