"""Embedded vectors on disk: one safetensors file per (model, revision, layer, pooling, word list).

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
from simreduce.vectors.vector_files import bad_rows
from simreduce.vectors.words import shown

log = logging.getLogger(__name__)


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def content_hash(vectors: torch.Tensor) -> str:
    """SHA-256 of the tensor's bytes, read in place: a copy would double the memory of a large cache."""
    return hashlib.sha256(memoryview(vectors.contiguous().numpy()).cast("B")).hexdigest()


def check_vectors(vectors: torch.Tensor, words: list[str]) -> None:
    """Reject vectors that would turn every cosine similarity involving them into NaN."""
    if len(bad := bad_rows(vectors.numpy())):
        named = [words[i] for i in bad.tolist()]
        raise SimreduceError(
            f"{len(named)} word vector(s) are NaN/inf or all zero, for {shown(named)}: "
            "remove these words or pick another embedder layer."
        )


class VectorCache:
    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir).expanduser()

    def path_for(self, key: dict[str, str], words: list[str]) -> Path:
        full_key = {**key, "words_sha256": _sha256(json.dumps(words))}
        return self.cache_dir / f"{_sha256(json.dumps(full_key, sort_keys=True))[:24]}.safetensors"

    def load(self, key: dict[str, str], words: list[str]) -> torch.Tensor | None:
        """The cached [N, D] vectors, or None when the file is missing, unreadable or does not match."""
        path = self.path_for(key, words)
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
        if stored_key != key or json.loads(meta.get("words", "null")) != words:
            log.warning("cache file %s was made for another model or word list: rebuilding it", path)
            return None
        if meta.get("content_sha256") != content_hash(vectors) or vectors.shape[0] != len(words):
            log.warning("cache file %s does not match its content hash: rebuilding it", path)
            return None
        return vectors

    def save(self, key: dict[str, str], words: list[str], vectors: torch.Tensor) -> Path:
        path = self.path_for(key, words)
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = vectors.to(torch.float32).contiguous()
        meta = {**key, "words": json.dumps(words), "content_sha256": content_hash(vectors)}
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
        self, key: dict[str, str], words: list[str], build: Callable[[list[str]], torch.Tensor]
    ) -> torch.Tensor:
        """Cached vectors for `words`, embedding them with `build` (once, across processes) when needed."""
        path = self.path_for(key, words)
        self._check_writable()
        with FileLock(str(path) + ".lock"):
            vectors = self.load(key, words)
            if vectors is None:
                vectors = build(words)
                check_vectors(vectors, words)
                self.save(key, words, vectors)
                log.info("cached %d vectors of width %d in %s", *vectors.shape, path)
        return vectors
