"""A reducer's map as plain data: a layer spec (JSON) and its tensors (safetensors). `simreduce compress`
rebuilds the map from these numbers alone, so serving a logged reducer never runs code, unpickles, or
imports the graph machinery of `torch.export`."""

from collections.abc import Mapping
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from simreduce.errors import SimreduceError
from simreduce.reducers.base import build_mlp

SPEC_FORMAT = "simreduce.mlp/1"  # `build_mlp`'s layout; a new layout gets a new format name


def layer_spec(net: nn.Module) -> dict:
    """What `rebuild` needs besides the tensors: the widths of the `build_mlp` stack `net` is."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    spec = {
        "format": SPEC_FORMAT,
        "in_dim": linears[0].in_features,
        "hidden": [m.out_features for m in linears[:-1]],
        "dim": linears[-1].out_features,
        "out_bias": linears[-1].bias is not None,
    }
    rebuilt = build_mlp(spec["in_dim"], spec["hidden"], spec["dim"], spec["out_bias"])
    if not isinstance(net, nn.Sequential) or [type(m) for m in net] != [type(m) for m in rebuilt]:
        raise TypeError(f"{type(net).__name__} is not a build_mlp stack; give its layout a new SPEC_FORMAT")
    return spec


def save_weights(net: nn.Module, path: Path) -> None:
    save_file({name: t.detach().cpu().contiguous() for name, t in net.state_dict().items()}, str(path))


def rebuild(spec: Mapping, weights_path: Path, source: str) -> nn.Sequential:
    """The map described by `spec` with the tensors of `weights_path`; anything else is refused, naming
    `source` (the model the user gave)."""
    if spec.get("format") != SPEC_FORMAT:
        raise SimreduceError(
            f"model {source!r} has layer format {spec.get('format')!r}, which this simreduce does not know "
            f"({SPEC_FORMAT!r}): compress it with the simreduce version that logged it."
        )
    try:
        net = build_mlp(int(spec["in_dim"]), [int(w) for w in spec["hidden"]], int(spec["dim"]), bool(spec["out_bias"]))
        net.load_state_dict(load_file(str(weights_path)), strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError) as e:
        raise SimreduceError(
            f"model {source!r} has weights that do not match its layer spec ({str(e).splitlines()[0]}): "
            "log it again with train.py."
        ) from e
    return net.eval()
