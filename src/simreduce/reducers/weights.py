"""A reducer's map as plain data: a layer spec (JSON) and its tensors (safetensors), with the precision its
vectors are stored at and that precision's calibration constants (int8's `starts` and `steps`, a b-bit code's
`rotation` and `levels`, a product code's `rotation` and `codebooks`). `simreduce compress` rebuilds the map
and the stored form from these numbers alone, so serving a logged reducer never runs code, unpickles, or
imports the graph machinery of `torch.export`."""

from collections.abc import Mapping, Sequence
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from simreduce.reducers.base import build_mlp
from simreduce.reducers.precision import PRECISIONS, StoredPrecision
from simreduce.runtime.errors import SimreduceError

SPEC_FORMAT = "simreduce.mlp/1"  # `build_mlp`'s layout; a new layout gets a new format name
STORED_PREFIX = "stored."  # the stored precision's constants in the weights file, beside the map's tensors


def layer_spec(net: nn.Module, precision: str = "float32", prefix_dims: Sequence[int] = ()) -> dict:
    """What `rebuild` needs besides the tensors: the widths of the `build_mlp` stack `net` is, the precision
    its output is stored at (a spec without one, logged before precisions, is float32), and the sizes whose
    prefix of its output is itself a reduction (a nested encoder's; empty for any other map)."""
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
    precision = spec.get("precision", "float32")
    if precision not in PRECISIONS:
        raise SimreduceError(
            f"model {source!r} stores its vectors as {precision!r}, which this simreduce does not know "
            f"({', '.join(PRECISIONS)}): compress it with the simreduce version that logged it."
        )
    try:
        tensors = load_file(str(weights_path))
        stored_names = {n for n in tensors if n.startswith(STORED_PREFIX)}
        constants = {n.removeprefix(STORED_PREFIX): tensors.pop(n).numpy() for n in stored_names}
        net = build_mlp(int(spec["in_dim"]), [int(w) for w in spec["hidden"]], int(spec["dim"]), bool(spec["out_bias"]))
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
