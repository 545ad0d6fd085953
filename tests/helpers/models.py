"""Model folders made by hand, as a user (or an attacker) could lay them out."""

from pathlib import Path

import torch
import yaml

from simreduce.experiment.tracking.registry import SPEC_KEY, WEIGHTS_PATH
from simreduce.reducers.base import apply_net, build_mlp
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import layer_spec, save_weights


def write_model_folder(
    folder: Path, marker: Path, simreduce_parts: bool, in_dim: int = 6, dim: int = 2, precision: str = "float32"
) -> torch.nn.Module:
    """An MLflow model folder whose pyfunc loader is code that leaves `marker` when it runs; with
    `simreduce_parts`, it also holds a reducer's layer spec and weights the way simreduce logs them, its
    output stored at `precision` (int8 calibrated on 32 seeded rows)."""
    net = build_mlp(in_dim, [], dim)
    rows = torch.randn(32, in_dim, generator=torch.Generator().manual_seed(0))
    stored = StoredPrecision.calibrated(precision, apply_net(net, rows))
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "evil_loader.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\n"
        "class Model:\n    def predict(self, x, params=None):\n        return x\n\n"
        "def _load_pyfunc(path, model_config=None):\n    return Model()\n"
    )
    mlmodel = {"flavors": {"python_function": {"loader_module": "evil_loader", "code": "code"}}}
    if simreduce_parts:
        (folder / "extra_files").mkdir()
        save_weights(net, folder / WEIGHTS_PATH, stored)
        mlmodel["flavors"]["pytorch"] = {"extra_files": [{"path": WEIGHTS_PATH}]}
        mlmodel["metadata"] = {SPEC_KEY: layer_spec(net, precision)}
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return net
