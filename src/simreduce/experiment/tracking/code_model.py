"""A reducer MLflow serves through simreduce's own code: `pyfunc.load_model(uri).predict(x)` returns what
`simreduce compress` writes, and for a nested reducer `predict(x, params={"dim": 64})` the first 64 outputs, as
`compress --dim 64` does.

Two kinds of model are logged this way rather than as an exported PyTorch program: a nested one (an exported
program takes tensors only, so no size can reach it), and one stored as a rotated code (int4..int1, pq4..pq1:
`torch.export` of the code's search over its levels or centroids took 2 to 11 s a candidate, more than scoring
it, and the codes are simreduce's own anyway). It is a pyfunc "from code" (MLflow runs this file to load the
model: nothing is pickled) that rebuilds the map from the layer spec and tensors logged with it, exactly as
compress does. Nothing imports this module; `JobRun.log_model` logs it by path.
"""

from pathlib import Path

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from simreduce.experiment.tracking.registry import WEIGHTS_ARTIFACT, LoggedReducer
from simreduce.reducers.weights import rebuild

SERVED = "the served model"


class ReducerModel(PythonModel):
    def load_context(self, context) -> None:
        spec = context.model_config  # the layer spec, also in the MLmodel's metadata for compress
        net, stored = rebuild(spec, Path(context.artifacts[WEIGHTS_ARTIFACT]), SERVED)
        prefixes = tuple(int(d) for d in spec["prefix_dims"])
        self.reducer = LoggedReducer(net, stored, int(spec["in_dim"]), int(spec["dim"]), None, prefixes)

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        """[N, in_dim] float32 -> the first `params["dim"]` outputs (default: all) as stored."""
        dim = int((params or {}).get("dim", self.reducer.dim))
        reducer = self.reducer if dim == self.reducer.dim else self.reducer.prefix(dim, SERVED, "params dim")
        return reducer.reduce(np.asarray(model_input, dtype=np.float32))


set_model(ReducerModel())
