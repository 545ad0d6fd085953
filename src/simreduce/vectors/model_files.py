"""Where a model's files come from (a package, a local folder or the hub), the identity that goes into the cache
key, and loading it (its tokenizer and base model, or the whole sentence-transformers model) with one clear message
when that cannot be done."""

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import torch

from simreduce.runtime.errors import SimreduceError

PACKAGE_SCHEME = "pkg://"
Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class ModelSource:
    """Where model files are read from, and the identity that goes into the cache key."""

    location: str
    model_id: str
    revision: str | None
    local_only: bool
    files: dict[str, str] = field(default_factory=dict)  # a local folder's file sizes and times: its "revision"


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """{"files": sha256 of the name, size and modification time of each file at the top level and in the folder of
    each module its modules.json names}: a model folder edited in place (new weights, another tokenizer, a
    sentence-transformers module's new config or weights) gets a new cache key without hashing gigabytes."""
    modules = _read_json(folder / "modules.json", str(folder)) or []
    folders = [folder, *(folder / module["path"] for module in modules if module.get("path"))]
    files = [path for sub in folders if sub.is_dir() for path in sub.iterdir() if path.is_file()]
    entries = sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return {"files": hashlib.sha256(repr(entries).encode()).hexdigest()[:16]}


def resolve_model_source(name_or_path: str, revision: str | None = None) -> ModelSource:
    """`pkg://package/folder` (a model shipped in a Python package), a local folder, or a hub id."""
    if name_or_path.startswith(PACKAGE_SCHEME):
        package, _, sub = name_or_path.removeprefix(PACKAGE_SCHEME).partition("/")
        try:
            module = importlib.import_module(package)
        except ImportError as e:
            raise SimreduceError(
                f"model {name_or_path!r} needs the Python package {package!r}: pip install it, "
                "or pass embedder.name_or_path=<a local model folder>."
            ) from e
        folder = Path(module.__file__).parent / sub
        version = importlib.metadata.version(package.replace("_", "-"))
        return ModelSource(str(folder), name_or_path, revision or version, local_only=True)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        folder = str(path.resolve())
        return ModelSource(folder, folder, revision, local_only=True, files=folder_fingerprint(path))
    if name_or_path.startswith((".", "/", "~")):
        raise SimreduceError(f"model folder {name_or_path!r} does not exist: pass an existing folder or a hub id.")
    return ModelSource(name_or_path, name_or_path, revision, local_only=False)


def _hub_unreachable_reason() -> str | None:
    """Why the model hub cannot be used right now, found in milliseconds instead of transformers' retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as e:
        return f"{url.hostname} cannot be reached ({e.strerror or e})"
    return None


def _load_failure(source: ModelSource, why: str) -> SimreduceError:
    return SimreduceError(
        f"cannot load model {source.model_id!r}: {why}. Run it where the hub is reachable, "
        "point embedder.name_or_path at a local copy of the model, or use the offline default embedder=minilm."
    )


def _load(source: ModelSource, load: Callable[[bool], Loaded]) -> Loaded:
    """`load(local_files_only)`: from local files first (a folder, or a hub model's copy in the local HF cache,
    which needs no network at all), else from the hub where it can be reached; a failure is one clear line."""
    try:
        if not source.local_only:
            try:
                return load(True)
            except OSError:
                if reason := _hub_unreachable_reason():
                    raise _load_failure(source, reason) from None
        return load(source.local_only)
    except (OSError, ValueError) as e:
        raise _load_failure(source, str(e).splitlines()[0]) from e


class UnusedHeadReport(logging.Filter):
    """Drops transformers' load report when every weight it lists is UNEXPECTED: a checkpoint's task head (a causal
    LM's `lm_head`), which the base model loaded here has no use for, on the console of every job. A report of
    missing, mismatched or converted weights still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "LOAD REPORT" not in text or any(status in text for status in ("MISSING", "MISMATCH", "CONVERSION"))


def load_pretrained(source: ModelSource, dtype: str = "float32", trust_remote_code: bool = False):
    """Tokenizer and base model (no LM head); a model that cannot be had fails fast with one clear message."""
    from transformers import AutoModel, AutoTokenizer

    def load(local_files_only: bool) -> tuple:
        kwargs = {"revision": _revision(source), "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=local_files_only, **kwargs)
        reporter, unused_head = logging.getLogger("transformers.modeling_utils"), UnusedHeadReport()
        reporter.addFilter(unused_head)
        try:
            model = AutoModel.from_pretrained(
                source.location, local_files_only=local_files_only, dtype=_torch_dtype(dtype), **kwargs
            )
        finally:
            reporter.removeFilter(unused_head)
        return tokenizer, model.eval()

    return _load(source, load)


def load_sentence_transformer(
    source: ModelSource, device: torch.device, dtype: str = "float32", trust_remote_code: bool = False
):
    """The model as sentence-transformers loads it, every module its modules.json lists (Transformer, Pooling,
    Dense, Normalize...) included, on `device`; one that cannot be had fails fast with one clear message."""
    from sentence_transformers import SentenceTransformer

    def load(local_files_only: bool) -> SentenceTransformer:
        return SentenceTransformer(
            source.location,
            device=str(device),
            revision=_revision(source),
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            model_kwargs={"dtype": _torch_dtype(dtype)},
        )

    return _load(source, load).eval()


def transformer_module(source: ModelSource, layer: int, dtype: str = "float32"):
    """Any model as a sentence-transformers `Transformer` module whose token embeddings are its hidden state
    `layer` (the one `embedding.py` pools), its tokenizer padding as `pad_on_the_right` says: the start of a
    sentence-transformers model that embeds texts as `Embedder.embed_texts` does. One clear message when the
    model cannot be had."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    def load(local_files_only: bool) -> Transformer:
        kwargs = {"revision": _revision(source), "local_files_only": local_files_only}
        return Transformer(
            source.location,
            model_kwargs={"dtype": _torch_dtype(dtype), **kwargs},
            processor_kwargs=kwargs,
            config_kwargs=kwargs,
            modality_config={"text": {"method": "forward", "method_output_name": ["hidden_states", layer]}},
            module_output_name="token_embeddings",
        )

    module = _load(source, load)
    pad_on_the_right(module.tokenizer)
    return module


def pad_on_the_right(tokenizer) -> None:
    """Padding after the tokens, with the end-of-text (else the unknown) token where the tokenizer has no pad
    token: the masks `pooling.py` pools over assume it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"


def sentence_transformer_modules(source: ModelSource) -> list[str] | None:
    """The module classes of a sentence-transformers model in order (`["Transformer", "Pooling", "Normalize"]`),
    read from its modules.json without loading it; None for any other model, and for a hub model whose
    modules.json is not in the local HF cache. Its other kinds (a SparseEncoder...) do not give dense vectors."""
    modules = read_model_json(source, "modules.json")
    if modules is None:
        return None
    st_config = read_model_json(source, "config_sentence_transformers.json") or {}
    if (model_type := st_config.get("model_type", "SentenceTransformer")) != "SentenceTransformer":
        raise SimreduceError(
            f"model {source.model_id!r} is a sentence-transformers {model_type}, not a SentenceTransformer: pick a "
            "model that embeds texts as dense vectors."
        )
    return [module["type"].rpartition(".")[2] for module in modules]


def _revision(source: ModelSource) -> str | None:
    """The hub revision to ask for; a folder or a package has only the one version of its files."""
    return None if source.local_only else source.revision


def _torch_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SimreduceError(f"embedder.dtype={name!r} is not a torch dtype: use float32, bfloat16, float16 or auto.")
    return dtype


def read_model_json(source: ModelSource, filename: str) -> dict | list | None:
    """A small JSON file of the model, or None where it has none: from its folder or, for a hub id, from the
    local HF cache only, so reading one never waits on the network."""
    if source.local_only:
        return _read_json(Path(source.location) / filename, source.model_id)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.location, filename, revision=source.revision)
    return _read_json(Path(cached), source.model_id) if isinstance(cached, str) else None


def _read_json(path: Path, model_id: str) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SimreduceError(f"{path.name} of model {model_id!r} is not valid JSON ({e}): repair it.") from e
