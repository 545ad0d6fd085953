"""simreduce: compress embedding vectors into fewer dimensions while keeping their cosine similarities."""

__version__ = "0.1.0"

from simreduce import paths as _paths  # noqa: E402,F401  (registers the config resolver ${simreduce.root:})
