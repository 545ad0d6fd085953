"""The reducer contract, scikit-learn's habit in torch: `fit(train_vectors) -> self`, then `net` maps
[N, D] -> [N, dim] and is what gets evaluated, logged and served.

Closed-form reducers do all their work in `fit`. Trained ones (`trains = True`) are LightningModules whose
`fit` only sets their start from the data; Lightning's `Trainer.fit` then trains them.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError


@dataclass(frozen=True)
class Candidate:
    """What selection ranks and compress serves: one map [N, D] -> [N, dim] a reducer yields, stored at one
    precision (see `simreduce.reducers.precision`). A reducer yields one per storage precision asked for (a nested
    encoder one per prefix too), each scored and logged as its own run. `prefix_dims`: the sizes up to `dim`
    whose prefix of the map's output is itself a reduction (a nested encoder's), empty for any other map.
    `code_bytes`: when what is stored is not the map's output but a code it is decoded from (a product
    quantizer's), that code's bytes; the output is then compared as it is."""

    kind: str
    dim: int
    net: nn.Module
    precision: str = "float32"
    prefix_dims: tuple[int, ...] = ()
    code_bytes: int | None = None

    @property
    def stored_form(self) -> str:
        """What a vector is stored as, the run's `precision` tag: `precision`, or `codes` for a code."""
        return "codes" if self.code_bytes is not None else self.precision

    @property
    def run_name(self) -> str:
        """`cosine-d0064` at float32 (the training run's own name), `cosine-d0064-int8` otherwise."""
        name = run_name(self.kind, self.dim)
        return name if self.precision == "float32" else f"{name}-{self.precision}"


@torch.no_grad()
def apply_net(net: nn.Module, vectors: torch.Tensor) -> torch.Tensor:
    """[N, D] -> [N, dim] through `net`, on the CPU and in eval mode, as it is logged and served."""
    return net.cpu().eval()(vectors)


def build_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, out_bias: bool = False) -> nn.Sequential:
    """Linear layers with GELU between them; `hidden=[]` is a single linear map."""
    if not all(is_positive_int(w) for w in hidden):
        raise SimreduceError(f"encoder.hidden={list(hidden)} must hold positive integer widths, e.g. [512] or [].")
    widths = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        last = i == len(widths) - 2
        layers.append(nn.Linear(a, b, bias=out_bias or not last))
        if not last:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def prefix_map(net: nn.Sequential, dim: int) -> nn.Sequential:
    """`net` with its last linear layer cut to its first `dim` outputs: the map [N, D] -> [N, dim] whose
    outputs are exactly the first `dim` outputs of `net`."""
    last = net[-1]
    cut = nn.Linear(last.in_features, dim, bias=last.bias is not None)
    with torch.no_grad():
        cut.weight.copy_(last.weight[:dim])
        if last.bias is not None:
            cut.bias.copy_(last.bias[:dim])
    return nn.Sequential(*copy.deepcopy(list(net)[:-1]), cut)


def run_name(kind: str, dim: object) -> str:
    """`cosine-d0064`; a dim that is not an integer (a bad override) is shown as given."""
    return f"{kind}-d{dim:04d}" if isinstance(dim, int) else f"{kind}-d{dim}"


def method_kind(kind: str, loss: object = "pairs") -> str:
    """What runs, tags, tables and charts call a reducer trained with `encoder.loss`: its kind (`cosine`), or with
    another objective than the study's pair loss, both (`cosine+neighbours`), so a sweep over losses tells them
    apart."""
    return kind if loss in (None, "pairs") else f"{kind}+{loss}"


class Reducer:
    """`kind` names the method in run names and tags (`cosine-d0064`); `dim` is the output width."""

    kind: ClassVar[str]
    trains: ClassVar[bool] = False
    reference: ClassVar[bool] = False  # another library's method, scored and charted beside ours: never a winner
    dim: int
    net: nn.Module

    def fit(self, train_vectors: torch.Tensor) -> "Reducer":
        """Fit on the [N_train, D] training rows (for a trained reducer: its start) and return self."""
        raise NotImplementedError

    def transform(self, vectors: torch.Tensor) -> torch.Tensor:
        return apply_net(self.net, vectors)

    def candidates(self, precisions: Sequence[str] = ("float32",)) -> list[Candidate]:
        """What this fitted reducer offers to selection: its map at its own dim, stored at each of `precisions`."""
        return [Candidate(self.kind, self.dim, self.net, precision) for precision in precisions]


def check_size(dim: int, setting: str = "encoder.dim") -> None:
    if not is_positive_int(dim):
        raise SimreduceError(f"{setting}={dim!r} must be a positive integer.")


def check_dim(dim: int, in_dim: int) -> None:
    check_size(dim)
    if dim >= in_dim:
        raise SimreduceError(
            f"encoder.dim={dim} is not below the input width {in_dim}: nothing would be compressed; pick a smaller dim."
        )


def check_lr(lr: float | None) -> None:
    """A learning rate is a positive number; None leaves the reducer's default."""
    if lr is not None and not (isinstance(lr, int | float) and lr > 0):
        raise SimreduceError(f"encoder.lr={lr!r} must be a positive number (or null for the default).")


def check_rank(dim: int, n_rows: int, method: str) -> None:
    if dim >= n_rows:
        raise SimreduceError(
            f"encoder.dim={dim} is not below the {n_rows} training words, so {method} has no {dim} components: "
            "pick a smaller dim or add words."
        )


def set_linear(layer: nn.Linear, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Copy a fitted [out, in] weight (and [out] bias) into `layer`, whatever the arrays' dtype and strides."""
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
