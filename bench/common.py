"""What the benchmarks share: synthetic vectors, the project's composed config, a best-of timer, tables."""

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def anisotropic_vectors(
    n: int, d: int, seed: int = 0, chunk: int = 8192, out: torch.Tensor | None = None
) -> torch.Tensor:
    """[n, d] float32 rows shaped like a language model's hidden states: a shared offset that makes every
    cosine positive, and a power-law spectrum (a few strong directions, a long weak tail).

    Cosine geometry is rotation-invariant, so axis-aligned anisotropy times as well as a rotated one.
    Built `chunk` rows at a time into `out` (e.g. a memory-mapped file), else into a new tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    scales = torch.arange(1, d + 1, dtype=torch.float32) ** -0.75
    offset = 0.3 * torch.randn(d, generator=generator) * scales.sqrt()
    out = torch.empty(n, d) if out is None else out
    for start in range(0, n, chunk):
        rows = out[start : start + chunk]
        rows.copy_(torch.randn(rows.shape, generator=generator) * scales + offset)
    return out


def compose_config(overrides: Sequence[str]):
    """The project's own config (conf/config.yaml) with `overrides`, as `train.py` would see it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Progress bars and Lightning's banners go to /dev/null while a timed block runs (they still run)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], note: str = "") -> None:
    """A markdown table, so the output pastes into the README as it is."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\n### {title}\n")
    print("\n".join(lines))
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def machine_summary(device: torch.device) -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    with contextlib.suppress(OSError):
        text += f", load average {os.getloadavg()[0]:.1f} at start"
    return text


def machine_note(*details: str) -> str:
    """The line under a table: the CPU (`lscpu`'s model name), torch and its threads, `details`, the load now."""
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    parts = [f"{model} ({platform.machine()})", f"torch {torch.__version__}", f"{torch.get_num_threads()} thread(s)"]
    return ", ".join([*parts, *details, f"load average {os.getloadavg()[0]:.1f} at the end"])
