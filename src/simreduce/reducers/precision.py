"""How a reduced vector is stored, and what a search over the stored form compares.

A candidate is scored on `comparable(reduced)`, the float vectors decoded from what would be stored, so every
metric is the stored form's, not the float32 map's. int8 follows sentence-transformers'
`quantize_embeddings(..., precision="int8", calibration_embeddings=...)`: per-dimension `starts` (the minimum)
and `steps` ((maximum - minimum) / 255) over the training rows' reduced vectors, codes
`floor((x - starts) / steps)` clipped to [0, 255] and shifted by -128, decoded as
`(code + 128) * steps + starts` (its `_dequantize_embeddings`). binary is its "ubinary": the sign bits packed
8 to a byte (`np.packbits(x > 0)`), compared as ±1 vectors, whose cosine is (dim - 2 * hamming) / dim.
The stored form is computed once, in torch (`StoredForm`), so what compress writes and what the exported model
MLflow serves returns are one computation.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from simreduce.runtime.errors import SimreduceError

PRECISIONS = ("float32", "float16", "int8", "binary")
STORED_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "binary": np.uint8}
INT8_LEVELS = 255  # steps between the lowest and the highest code


def check_precisions(names: object) -> None:
    """`eval.precisions`, refused in one line when it is no list or names a precision simreduce does not store."""
    if isinstance(names, str):
        raise SimreduceError(f"eval.precisions={names!r} must be a list, e.g. [float32, int8].")
    if unknown := [name for name in names if name not in PRECISIONS]:
        raise SimreduceError(
            f"eval.precisions names {', '.join(map(repr, unknown))}, which simreduce does not store: "
            f"pick from {', '.join(PRECISIONS)}."
        )


@dataclass(frozen=True, eq=False)
class StoredPrecision:
    """One stored form: `name` (one of PRECISIONS) and, for int8, its calibration constants `starts` and
    `steps` ([dim] float32 each), which are part of the served model."""

    name: str
    starts: np.ndarray | None = None
    steps: np.ndarray | None = None

    def __post_init__(self):
        constants = [c for c in (self.starts, self.steps) if c is not None]
        if self.name not in PRECISIONS or len(constants) != (2 if self.name == "int8" else 0):
            raise ValueError(f"{self.name!r} with {len(constants)} constant(s): int8 alone has starts and steps")

    @classmethod
    def calibrated(cls, name: str, reduced: torch.Tensor, rows: torch.Tensor | None = None) -> "StoredPrecision":
        """`name`'s stored form; int8's ranges come from the `rows` (the training rows a fit sees; default all)
        of the [N, dim] reduced vectors, gathered only for int8 (a zero range gets a step of 1, as in
        sentence-transformers)."""
        if name != "int8":
            return cls(name)
        calibration = (reduced if rows is None else reduced[rows]).numpy().astype(np.float32, copy=False)
        starts = calibration.min(axis=0)
        steps = (calibration.max(axis=0) - starts) / INT8_LEVELS
        return cls(name, starts, np.where(steps == 0, 1, steps).astype(np.float32))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORED_DTYPES[self.name])

    def stored_width(self, dim: int) -> int:
        """Values per stored vector: `dim`, or for binary the bytes holding its `dim` bits."""
        return (dim + 7) // 8 if self.name == "binary" else dim

    def bytes_per_vector(self, dim: int) -> int:
        return self.stored_width(dim) * self.dtype.itemsize

    def encode(self, reduced: np.ndarray) -> np.ndarray:
        """[N, dim] float reduced vectors -> what is stored: [N, dim] float32/float16/int8, or [N, ceil(dim/8)]
        uint8 packed sign bits; computed by `StoredForm`, the module the served model ends with."""
        return StoredForm(self)(torch.from_numpy(np.ascontiguousarray(reduced, dtype=np.float32))).numpy()

    def decode(self, stored: np.ndarray, dim: int) -> np.ndarray:
        """What `encode` stored -> [N, dim] float32 vectors whose cosines are those a search over it computes."""
        if self.name == "int8":
            return (stored.astype(np.float32) + 128) * self.steps + self.starts
        if self.name == "binary":
            return np.unpackbits(stored, axis=-1, count=dim).astype(np.float32) * 2 - 1
        return stored.astype(np.float32)

    def comparable(self, reduced: torch.Tensor) -> torch.Tensor:
        """[N, dim] reduced vectors -> the [N, dim] float32 vectors they are compared as once stored."""
        if self.name == "float32":
            return reduced  # stored as they are: no copy of a large reduction
        return torch.from_numpy(self.decode(self.encode(reduced.numpy()), reduced.shape[1]))

    def prefix(self, dim: int) -> "StoredPrecision":
        """The stored form of the first `dim` values of each vector (a nested map's prefix): int8's per-dimension
        constants cut to them, which are exactly what calibrating the prefix would give."""
        if self.starts is None:
            return self
        return StoredPrecision(self.name, self.starts[:dim], self.steps[:dim])

    def constants(self) -> dict[str, torch.Tensor]:
        """The calibration constants under their names in the model's weights file (none but int8's)."""
        if self.starts is None:
            return {}
        return {"starts": torch.from_numpy(self.starts), "steps": torch.from_numpy(self.steps)}


class StoredForm(nn.Module):
    """[N, dim] float32 reduced vectors -> what `precision` stores ([N, dim], or binary's [N, ceil(dim/8)]), as
    the module the served model ends with (`torch.export` keeps int8's `starts` and `steps` as buffers): int8 codes
    `clip(floor((x - starts) / steps), 0, 255) - 128`, binary's sign bits `x > 0` packed 8 to a byte with the
    first bit highest and zeros after the last (`np.packbits`), float16 a cast, float32 the vectors themselves."""

    def __init__(self, precision: StoredPrecision):
        super().__init__()
        self.precision = precision.name
        for name, constant in precision.constants().items():
            self.register_buffer(name, constant.to(torch.float32, copy=True))

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        if self.precision == "int8":
            codes = torch.floor((reduced - self.starts) / self.steps).clamp(0, INT8_LEVELS)
            return (codes - 128).to(torch.int8)
        if self.precision == "binary":
            bits = nn.functional.pad((reduced > 0).to(torch.uint8), (0, -reduced.shape[1] % 8))
            place = 2 ** torch.arange(7, -1, -1, device=reduced.device)  # 128, 64, ..., 1: the first bit highest
            return (bits.unflatten(1, (-1, 8)) * place).sum(dim=-1).to(torch.uint8)
        return reduced.to(torch.float16 if self.precision == "float16" else torch.float32)
