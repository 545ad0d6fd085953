"""Embedded vectors on disk: one safetensors file per (key, ids): the key names the model, its revision and how
it was used (layer, pooling, the texts' hash...), the ids the rows (the words, or a corpus's text ids).

Files are written to a temporary name and renamed, under a file lock, so a killed job never leaves a half
file and parallel sweep jobs embed once. A file whose metadata or content hash does not match its key is
rebuilt, never used.
"""

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from simreduce.runtime.atomic import atomic_path
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.rows import shown
from simreduce.vectors.vector_files import bad_rows

log = logging.getLogger(__name__)

# The ids' names in a file's metadata and in its name's hash: files already written keep being found under them.
IDS_FIELD, IDS_HASH_FIELD = "words", "words_sha256"


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def content_hash(vectors: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes, read in place: a copy would double the memory of a large cache."""
    return hashlib.sha256(memoryview(vectors.contiguous().numpy()).cast("B")).hexdigest()


def check_vectors(vectors: torch.Tensor, ids: list[str]) -> None:
    """Reject [N, D] vectors, one per id, that would turn every cosine similarity involving them into NaN."""
    if len(bad := bad_rows(vectors.numpy())):
        named = [ids[i] for i in bad.tolist()]
        raise SimreduceError(
            f"{len(named)} embedded vector(s) are NaN/inf or all zero, for {shown(named)}: "
            "remove these rows or pick another embedder layer."
        )


class VectorCache:
    """Embedded vectors by key and ids, in `cache_dir`; a file that does not match what it was asked for is
    rebuilt, never used."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir).expanduser()

    def path_for(self, key: dict[str, str], ids: list[str]) -> Path:
        full_key = {**key, IDS_HASH_FIELD: _sha256(json.dumps(ids))}
        return self.cache_dir / f"{_sha256(json.dumps(full_key, sort_keys=True))[:24]}.safetensors"

    def load(self, key: dict[str, str], ids: list[str]) -> torch.Tensor | None:
        """The cached [N, D] vectors of the N ids, or None when the file is missing, unreadable or does not match."""
        path = self.path_for(key, ids)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            vectors = load_file(str(path))["vectors"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            log.warning("cache file %s is unreadable (%s): rebuilding it", path, e)
            return None
        stored_key = {k: meta.get(k) for k in key}
        if stored_key != key or json.loads(meta.get(IDS_FIELD, "null")) != ids:
            log.warning("cache file %s was made for another model or other ids: rebuilding it", path)
            return None
        if meta.get("content_sha256") != content_hash(vectors) or vectors.shape[0] != len(ids):
            log.warning("cache file %s does not match its content hash: rebuilding it", path)
            return None
        return vectors

    def save(self, key: dict[str, str], ids: list[str], vectors: torch.Tensor) -> Path:
        """Writes the [N, D] vectors of the N ids as float32, atomically."""
        path = self.path_for(key, ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = vectors.to(torch.float32).contiguous()
        meta = {**key, IDS_FIELD: json.dumps(ids), "content_sha256": content_hash(vectors)}
        with atomic_path(path) as tmp:
            save_file({"vectors": vectors}, str(tmp), metadata=meta)
        return path

    def _check_writable(self) -> None:
        """The folder exists and takes files (the lock file, the cache file), or one line says where to go."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tempfile.NamedTemporaryFile(dir=self.cache_dir).close()
        except OSError as e:
            raise SimreduceError(
                f"the vector cache folder {str(self.cache_dir)!r} cannot be written ({e.strerror or e}): "
                "set data.cache_dir=<a writable folder> or SIMREDUCE_ROOT."
            ) from e

    def get_or_build(
        self, key: dict[str, str], ids: list[str], build: Callable[[list[str]], torch.Tensor]
    ) -> torch.Tensor:
        """The cached [N, D] vectors of the N ids, built by `build(ids)` (once, across processes) when needed."""
        path = self.path_for(key, ids)
        self._check_writable()
        with FileLock(str(path) + ".lock"):
            vectors = self.load(key, ids)
            if vectors is None:
                vectors = build(ids)
                check_vectors(vectors, ids)
                self.save(key, ids, vectors)
                log.info("cached %d vectors of width %d in %s", *vectors.shape, path)
        return vectors
