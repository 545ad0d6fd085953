"""A reducer's map as plain data: a layer spec (JSON) and its tensors (safetensors), with the precision its
vectors are stored at and that precision's calibration constants (int8's `starts` and `steps`, a b-bit code's
`rotation` and `levels`, a product code's `rotation` and `codebooks`). `simreduce compress` rebuilds the map
and the stored form from these numbers alone, so serving a logged reducer never runs code, unpickles, or
imports the graph machinery of `torch.export`."""

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from simreduce.reducers.base import build_mlp
from simreduce.reducers.precision import PRECISIONS, StoredPrecision
from simreduce.runtime.errors import SimreduceError

SPEC_FORMAT = "simreduce.mlp/1"  # `build_mlp`'s layout; a new layout gets a new format name
STORED_PREFIX = "stored."  # the stored precision's constants in the weights file, beside the map's tensors


def layer_spec(net: nn.Module, precision: str = "float32", prefix_dims: Sequence[int] = ()) -> dict:
    """What `rebuild` needs besides the tensors: the widths of the `build_mlp` stack `net` is, the precision
    its output is stored at, and the sizes whose prefix of its output is itself a reduction (a nested encoder's;
    empty for any other map)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    spec = {
        "format": SPEC_FORMAT,
        "in_dim": linears[0].in_features,
        "hidden": [m.out_features for m in linears[:-1]],
        "dim": linears[-1].out_features,
        "out_bias": linears[-1].bias is not None,
        "precision": precision,
        "prefix_dims": list(prefix_dims),
    }
    rebuilt = build_mlp(spec["in_dim"], spec["hidden"], spec["dim"], spec["out_bias"])
    if not isinstance(net, nn.Sequential) or [type(m) for m in net] != [type(m) for m in rebuilt]:
        raise TypeError(f"{type(net).__name__} is not a build_mlp stack; give its layout a new SPEC_FORMAT")
    return spec


def save_weights(net: nn.Module, path: Path, stored: StoredPrecision | None = None) -> None:
    """`net`'s tensors, and those of `stored` (its calibration constants, if any) under STORED_PREFIX."""
    constants = stored.constants() if stored else {}
    tensors = net.state_dict() | {STORED_PREFIX + name: t for name, t in constants.items()}
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(path))


def rebuild(spec: Mapping, weights_path: Path, source: str) -> tuple[nn.Sequential, StoredPrecision]:
    """The map described by `spec` with the tensors of `weights_path`, and the precision its output is stored
    at; anything else is refused, naming `source` (the model the user gave)."""
    if spec.get("format") != SPEC_FORMAT:
        raise SimreduceError(
            f"model {source!r} has layer format {spec.get('format')!r}, which this simreduce does not know "
            f"({SPEC_FORMAT!r}): compress it with the simreduce version that logged it."
        )
    precision = spec.get("precision")
    if precision not in PRECISIONS:
        raise SimreduceError(
            f"model {source!r} stores its vectors as {precision!r}, which this simreduce does not know "
            f"({', '.join(PRECISIONS)}): compress it with the simreduce version that logged it."
        )
    try:
        with torch.device("meta"):  # the declared layers' shapes, with no memory taken: a spec may claim any size
            net = build_mlp(
                int(spec["in_dim"]), [int(w) for w in spec["hidden"]], int(spec["dim"]), bool(spec["out_bias"])
            )
        _check_shapes(net, weights_path, source)
        _check_prefixes(spec.get("prefix_dims", []), int(spec["dim"]), source)
        tensors = load_file(str(weights_path))
        stored_names = {n for n in tensors if n.startswith(STORED_PREFIX)}
        constants = {n.removeprefix(STORED_PREFIX): tensors.pop(n).numpy() for n in stored_names}
        net = net.to_empty(device="cpu")  # filled whole by the file's tensors, each checked above
        net.load_state_dict(tensors, strict=True)
        stored = StoredPrecision(precision, **constants)
        if stored.dim not in (None, net[-1].out_features):
            raise ValueError(f"calibration constants for {stored.dim} values, not {net[-1].out_features}")
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise SimreduceError(
            f"model {source!r} has weights that do not match its layer spec ({str(e).splitlines()[0]}): "
            "log it again with simreduce train."
        ) from e
    return net.eval(), stored


def _check_shapes(net: nn.Module, weights_path: Path, source: str) -> None:
    """Refuse, naming the layer and both shapes, a layer the spec declares (`net`, on the meta device) with
    another shape than the weights file's header gives it, before any memory is taken for it: a spec that
    declares 3e7 outputs beside a 1.4 KB file would otherwise take gigabytes first."""
    with safe_open(str(weights_path), framework="pt") as f:
        stored = {name: list(f.get_slice(name).get_shape()) for name in f.keys() if not name.startswith(STORED_PREFIX)}
    declared = {name: list(t.shape) for name, t in net.state_dict().items()}
    for name, shape in declared.items():
        if stored.get(name) != shape:
            found = f"holds {stored[name]}" if name in stored else "has no such tensor"
            raise SimreduceError(
                f"model {source!r} has weights that do not match its layer spec: it declares layer {name} of shape "
                f"{shape}, its weights file {found}; log it again with simreduce train."
            )
    if extra := sorted(set(stored) - set(declared)):
        raise SimreduceError(
            f"model {source!r} has weights that do not match its layer spec: its weights file holds {extra}, "
            "which the spec does not declare; log it again with simreduce train."
        )


def _check_prefixes(prefix_dims: Sequence, dim: int, source: str) -> None:
    """Refuse prefix sizes (a nested model's) that are not sizes of its `dim` outputs: a prefix is cut from the
    last layer when asked for, so one declared beyond it would take its memory then."""
    if not isinstance(prefix_dims, Sequence) or not all(isinstance(d, int) and 1 <= d <= dim for d in prefix_dims):
        raise SimreduceError(
            f"model {source!r} has weights that do not match its layer spec: it declares prefix sizes "
            f"{prefix_dims!r}, not sizes of its {dim} outputs; log it again with simreduce train."
        )
