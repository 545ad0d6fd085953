"""Lightning's fit loop against a plain torch loop running the same optimisation steps on the same data.

Both start from one initialised encoder (built from `conf/encoder`, so the bench measures whatever recipe
`simreduce.reducers.cosine` holds), read batches from the project's `BatchStream`, and run as many steps as
Lightning ran. The Lightning side is the real one: the trainer from `conf/trainer` (progress bar included)
and the project's data module; only the MLflow logger is left out (its cost is in the sweep's `logging`).
Runs alternate and the best of `repeats` is kept, so load from other processes cancels out of the ratio.
"""

import logging
import time
import warnings

import torch
from common import anisotropic_vectors, compose_config, print_table, quiet, synchronize
from hydra.utils import instantiate

from simreduce.vectors.data import BatchStream, VectorDataModule
from simreduce.vectors.sources import Vectors

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its banners, once per Trainer


class InMemorySource:
    """A source whose vectors are already in memory."""

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def load(self) -> Vectors:
        return Vectors([f"w{i}" for i in range(len(self.vectors))], self.vectors)


def in_memory_data(vectors: torch.Tensor, batch_size: int) -> VectorDataModule:
    """The project's data module over a matrix already in memory, no held-out rows."""
    return VectorDataModule(InMemorySource, name="bench", val_fraction=0.0, batch_size=batch_size, vectors=vectors)


def optimizer_and_scheduler(configured):
    """(optimizer, scheduler or None, monitored metric or None, stepped every step?) from what a
    LightningModule's `configure_optimizers` returns: an optimizer, or a dict with `optimizer` and an
    optional `lr_scheduler` (a scheduler or a dict holding one)."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured, None, None, False
    if not isinstance(configured, dict):
        raise TypeError(f"the plain loop does not know configure_optimizers' form {type(configured).__name__}")
    scheduler = configured.get("lr_scheduler")
    if isinstance(scheduler, dict):
        per_step = scheduler.get("interval", "epoch") == "step"
        return configured["optimizer"], scheduler["scheduler"], scheduler.get("monitor"), per_step
    return configured["optimizer"], scheduler, None, False


def plain_fit(module, vectors: torch.Tensor, batch_size: int, steps: int, device: torch.device) -> None:
    """The loop a reader would write by hand: the module's own optimiser and per-step schedule, the same
    loss through a closure (as Lightning calls it, so LBFGS-like optimisers work too), no framework."""
    module.to(device).train()
    optimizer, scheduler, monitor, per_step = optimizer_and_scheduler(module.configure_optimizers())
    stream = iter(BatchStream(vectors, torch.arange(len(vectors)), batch_size, seed=0, device=device))
    for _ in range(steps):
        batch = next(stream).to(device)

        def closure(batch: torch.Tensor = batch) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = module.loss(batch) / getattr(module, "loss_scale", 1.0)  # as the module's training_step
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        if scheduler is not None and per_step:
            scheduler.step(loss.detach()) if monitor else scheduler.step()
    synchronize(device)


def lightning_fit(module, cfg, vectors: torch.Tensor) -> tuple[int, torch.device]:
    """Trainer built and fitted as a job does, without the MLflow logger -> (steps it ran, its device)."""
    trainer = instantiate(cfg.trainer, logger=False)
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=in_memory_data(vectors, cfg.data.batch_size))
    synchronize(trainer.strategy.root_device)
    return trainer.global_step, trainer.strategy.root_device


def compare(vectors: torch.Tensor, dim: int, steps: int, accelerator: str, repeats: int) -> dict:
    cfg = compose_config([f"encoder.dim={dim}", f"encoder.steps={steps}", f"trainer.accelerator={accelerator}"])

    def prepared() -> torch.nn.Module:
        """The same start for every try (a deep copy of a parametrised module is not one)."""
        torch.manual_seed(0)
        module = instantiate(cfg.encoder, in_dim=vectors.shape[1])
        module.fit(vectors)
        return module

    best_lightning = best_plain = float("inf")
    for _ in range(repeats):
        module = prepared()
        started = time.perf_counter()
        ran, device = lightning_fit(module, cfg, vectors)
        best_lightning = min(best_lightning, time.perf_counter() - started)
        module = prepared()
        started = time.perf_counter()
        plain_fit(module, vectors, cfg.data.batch_size, ran, device)
        best_plain = min(best_plain, time.perf_counter() - started)
    return {"dim": dim, "steps": ran, "device": device, "lightning": best_lightning, "plain": best_plain}


def run(n: int, d: int, dims: list[int], steps: int, accelerator: str, repeats: int) -> list[dict]:
    vectors = anisotropic_vectors(n, d)
    results = [compare(vectors, dim, steps, accelerator, repeats) for dim in dims]
    print_table(
        f"Lightning vs a plain torch loop: {n} x {d} vectors, full batch, same steps (best of {repeats})",
        ["dim", "device", "steps", "Lightning ms/step", "plain ms/step", "Lightning / plain"],
        [
            [
                r["dim"],
                r["device"].type,
                r["steps"],
                f"{1e3 * r['lightning'] / r['steps']:.2f}",
                f"{1e3 * r['plain'] / r['steps']:.2f}",
                f"{r['lightning'] / r['plain']:.2f}x",
            ]
            for r in results
        ],
        note="Each time covers the whole fit: Trainer built, data module set up, every step, teardown.",
    )
    return results
