"""How a reduced vector is stored, and what a search over the stored form compares.

A candidate is scored on `comparable(reduced)`, the float vectors decoded from what would be stored, so every
metric is the stored form's, not the float32 map's. int8 follows sentence-transformers'
`quantize_embeddings(..., precision="int8", calibration_embeddings=...)`: per-dimension `starts` (the minimum)
and `steps` ((maximum - minimum) / 255) over the training rows' reduced vectors, codes
`floor((x - starts) / steps)` clipped to [0, 255] and shifted by -128, decoded as
`(code + 128) * steps + starts` (its `_dequantize_embeddings`). binary is its "ubinary": the sign bits packed
8 to a byte (`np.packbits(x > 0)`), compared as ±1 vectors, whose cosine is (dim - 2 * hamming) / dim.
int4, int2 and int1 are codes of 4, 2 or 1 bits a value after a learned rotation, with levels per dimension fit
on the training rows (`reducers/codes.py` says why each part): at equal bytes they keep far more neighbours
than fewer dimensions at int8. binary stays the plain sign bits beside int1: it is what pgvector's `bit` and
sentence-transformers' "ubinary" store and compare by Hamming distance, needing no table to read, and models
logged with it keep loading; int1 spends the same bit per value on rotated, levelled values instead.
pq4, pq2 and pq1 spend the same 4, 2 or 1 bits a value as one byte per 2, 4 or 8 rotated values, the nearest of
256 centroids (`reducers/product_codes.py`): at 1 and 2 bits they keep more neighbours than the scalar codes.
The stored form is computed once, in torch (`StoredForm`), so what compress writes and what the exported model
MLflow serves returns are one computation.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from simreduce.reducers.codes import CODE_BITS, CodeForm, decode, learned_rotation, packed_width, rotated
from simreduce.reducers.product_codes import VALUES_PER_CODE, ProductForm, decode_product, fit_product_codes
from simreduce.runtime.errors import SimreduceError

PRECISIONS = ("float32", "float16", "int8", "int4", "int2", "int1", "pq4", "pq2", "pq1", "binary")
STORED_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}  # the others: uint8 bytes
INT8_LEVELS = 255  # steps between the lowest and the highest code
CONSTANTS = (
    {"int8": ("starts", "steps")}
    | dict.fromkeys(CODE_BITS, ("rotation", "levels"))
    | dict.fromkeys(VALUES_PER_CODE, ("rotation", "codebooks"))
)
ROTATED = (*CODE_BITS, *VALUES_PER_CODE)  # forms whose rotation mixes every value of a vector: no prefix
ROTATION_SEED = 0  # the learned rotation's start: a candidate's codes do not depend on the sweep's seed


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
    """One stored form: `name` (one of PRECISIONS) and its calibration constants, part of the served model:
    int8's `starts` and `steps` ([dim] float32 each); a b-bit code's `rotation` ([dim, dim] orthogonal) and
    `levels` ([dim, 2^b], sorted); a product code's `rotation` and `codebooks` ([ceil(dim * b / 8), 256, 8 / b])."""

    name: str
    starts: np.ndarray | None = None
    steps: np.ndarray | None = None
    rotation: np.ndarray | None = None
    levels: np.ndarray | None = None
    codebooks: np.ndarray | None = None

    def __post_init__(self):
        names = ("starts", "steps", "rotation", "levels", "codebooks")
        given = tuple(name for name in names if getattr(self, name) is not None)
        if self.name not in PRECISIONS or given != CONSTANTS.get(self.name, ()):
            raise ValueError(f"{self.name!r} with constants {given}: {self.name} has {CONSTANTS.get(self.name, ())}")
        dim = self.dim
        if self.levels is not None and self.levels.shape[1] != 2 ** CODE_BITS[self.name]:
            raise ValueError(f"{self.name} with levels of shape {self.levels.shape}")
        if self.codebooks is not None and self.codebooks.shape[1:] != (256, VALUES_PER_CODE[self.name]):
            raise ValueError(f"{self.name} with codebooks of shape {self.codebooks.shape}")
        if self.rotation is not None and self.rotation.shape != (dim, dim):
            raise ValueError(f"{self.name} with a {self.rotation.shape} rotation for {dim} values")
        if self.codebooks is not None and len(self.codebooks) != self.stored_width(dim):
            raise ValueError(f"{self.name} with {len(self.codebooks)} codebooks for {dim} values")
        if self.starts is not None and self.starts.shape != self.steps.shape:
            raise ValueError(f"int8 with {self.starts.shape} starts and {self.steps.shape} steps")

    @property
    def dim(self) -> int | None:
        """The width of the vectors the constants were calibrated for; None for a form without constants."""
        first = next((getattr(self, name) for name in CONSTANTS.get(self.name, ())), None)
        return None if first is None else len(first)

    @classmethod
    def calibrated(cls, name: str, reduced: torch.Tensor, rows: torch.Tensor | None = None) -> "StoredPrecision":
        """`name`'s stored form, its constants from the `rows` (the training rows a fit sees; default all) of
        the [N, dim] reduced vectors: int8's ranges (a zero range gets a step of 1, as in sentence-transformers),
        or a b-bit code's rotation and levels, or a product code's rotation and centroids."""
        if name not in CONSTANTS:
            return cls(name)
        calibration = reduced if rows is None else reduced[rows]
        if name in ROTATED:
            unit = rotated(calibration, np.eye(reduced.shape[1], dtype=np.float32))
            if name in VALUES_PER_CODE:
                rotation, codebooks = fit_product_codes(unit, VALUES_PER_CODE[name], ROTATION_SEED)
                return cls(name, rotation=rotation, codebooks=codebooks)
            rotation, levels = learned_rotation(unit, CODE_BITS[name], ROTATION_SEED)
            return cls(name, rotation=rotation, levels=levels)
        calibration = calibration.numpy().astype(np.float32, copy=False)
        starts = calibration.min(axis=0)
        steps = (calibration.max(axis=0) - starts) / INT8_LEVELS
        return cls(name, starts, np.where(steps == 0, 1, steps).astype(np.float32))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORED_DTYPES.get(self.name, np.uint8))

    def stored_width(self, dim: int) -> int:
        """Values per stored vector: `dim`, or for binary, the b-bit and the product codes the bytes holding
        `dim` values at 1 or b bits each."""
        if self.name in VALUES_PER_CODE:
            return -(-dim // VALUES_PER_CODE[self.name])
        if self.name == "binary":
            return packed_width(dim, 1)
        return packed_width(dim, CODE_BITS[self.name]) if self.name in CODE_BITS else dim

    def bytes_per_vector(self, dim: int) -> int:
        return self.stored_width(dim) * self.dtype.itemsize

    def encode(self, reduced: np.ndarray) -> np.ndarray:
        """[N, dim] float reduced vectors -> what is stored: [N, dim] float32/float16/int8, or [N, ceil(dim/8)]
        uint8 packed sign bits, or [N, ceil(dim * b / 8)] uint8 packed b-bit codes or product codes; computed by
        `StoredForm`, the module the served model ends with."""
        return StoredForm(self)(torch.from_numpy(np.ascontiguousarray(reduced, dtype=np.float32))).numpy()

    def decode(self, stored: np.ndarray, dim: int) -> np.ndarray:
        """What `encode` stored -> [N, dim] float32 vectors whose cosines are those a search over it computes."""
        if self.name == "int8":
            return (stored.astype(np.float32) + 128) * self.steps + self.starts
        if self.name == "binary":
            return np.unpackbits(stored, axis=-1, count=dim).astype(np.float32) * 2 - 1
        if self.name in CODE_BITS:
            return decode(stored, self.rotation, self.levels)
        if self.name in VALUES_PER_CODE:
            return decode_product(stored, self.rotation, self.codebooks)
        return stored.astype(np.float32)

    def comparable(self, reduced: torch.Tensor) -> torch.Tensor:
        """[N, dim] reduced vectors -> the [N, dim] float32 vectors they are compared as once stored."""
        if self.name == "float32":
            return reduced  # stored as they are: no copy of a large reduction
        return torch.from_numpy(self.decode(self.encode(reduced.numpy()), reduced.shape[1]))

    def prefix(self, dim: int) -> "StoredPrecision":
        """The stored form of the first `dim` values of each vector (a nested map's prefix): int8's per-dimension
        constants cut to them, which are exactly what calibrating the prefix would give. A rotated code (b-bit
        or product) has none: its rotation mixes every value of the vector."""
        if self.name in ROTATED:
            raise SimreduceError(
                f"a nested model stored as {self.name} has no prefix codes (its rotation mixes all {self.dim} "
                "values): serve the candidate logged at that size instead."
            )
        if self.starts is None:
            return self
        return StoredPrecision(self.name, self.starts[:dim], self.steps[:dim])

    def constants(self) -> dict[str, torch.Tensor]:
        """The calibration constants under their names in the model's weights file (none for float or binary)."""
        return {name: torch.from_numpy(getattr(self, name)) for name in CONSTANTS.get(self.name, ())}


class StoredForm(nn.Module):
    """[N, dim] float32 reduced vectors -> what `precision` stores ([N, dim], binary's [N, ceil(dim/8)] or a b-bit
    code's [N, ceil(dim * b / 8)], see `codes.CodeForm`), as
    the module the served model ends with (`torch.export` keeps int8's `starts` and `steps` as buffers): int8 codes
    `clip(floor((x - starts) / steps), 0, 255) - 128`, binary's sign bits `x > 0` packed 8 to a byte with the
    first bit highest and zeros after the last (`np.packbits`), float16 a cast, float32 the vectors themselves."""

    def __init__(self, precision: StoredPrecision):
        super().__init__()
        self.precision = precision.name
        if precision.name in ROTATED:
            if precision.name in VALUES_PER_CODE:
                self.codes = ProductForm(precision.rotation, precision.codebooks)
            else:
                self.codes = CodeForm(precision.rotation, precision.levels)
            return
        for name, constant in precision.constants().items():
            self.register_buffer(name, constant.to(torch.float32, copy=True))

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        if self.precision in ROTATED:
            return self.codes(reduced)
        if self.precision == "int8":
            codes = torch.floor((reduced - self.starts) / self.steps).clamp(0, INT8_LEVELS)
            return (codes - 128).to(torch.int8)
        if self.precision == "binary":
            bits = nn.functional.pad((reduced > 0).to(torch.uint8), (0, -reduced.shape[1] % 8))
            place = 2 ** torch.arange(7, -1, -1, device=reduced.device)  # 128, 64, ..., 1: the first bit highest
            return (bits.unflatten(1, (-1, 8)) * place).sum(dim=-1).to(torch.uint8)
        return reduced.to(torch.float16 if self.precision == "float16" else torch.float32)
