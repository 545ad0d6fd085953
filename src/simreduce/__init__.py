"""simreduce: compress embedding vectors into fewer dimensions while keeping their cosine similarities."""

__version__ = "0.1.0"
