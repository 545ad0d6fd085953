"""simreduce: compress embedding vectors into fewer dimensions while keeping their cosine similarities.

The package is laid out by stage: `vectors/` (where vectors come from) -> `reducers/` (maps and stored forms)
-> `evaluate/` (pairs, neighbours, charts) -> `experiment/` (Hydra jobs, selection, MLflow), with `runtime/`
beneath them all and the commands (`cli`, `compress`) on top. `conf/` is the Hydra config.
"""

__version__ = "0.1.0"
