"""simreduce: compress embedding vectors into fewer dimensions while keeping their cosine similarities."""

__version__ = "0.1.0"

# Import for the config resolvers they register: ${simreduce.root:}, ${simreduce.launch_time:FORMAT} and others.
from simreduce import distributed as _distributed  # noqa: E402,F401
from simreduce import paths as _paths  # noqa: E402,F401
