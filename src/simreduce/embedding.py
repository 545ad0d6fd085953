"""Vectors from a Hugging Face model: words (one hidden layer, pooled over each word's own tokens) and texts."""

import hashlib
import importlib
import importlib.metadata
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from tqdm.auto import tqdm

from simreduce.errors import SimreduceError
from simreduce.words import shown

log = logging.getLogger(__name__)

PACKAGE_SCHEME = "pkg://"
POOLINGS = ("mean", "last")
# Embedder arguments that change how vectors are computed, not what they are (`name` is a label; the
# device and batch size change the last bits at most). The model's identity comes from its `ModelSource`.
NOT_IN_CACHE_KEY = ("name", "name_or_path", "batch_size", "device", "trust_remote_code")


@dataclass(frozen=True)
class ModelSource:
    """Where model files are read from, and the identity that goes into the cache key."""

    location: str
    model_id: str
    revision: str | None
    local_only: bool
    files: dict[str, str] = field(default_factory=dict)  # a local folder's file sizes and times: its "revision"


def folder_fingerprint(folder: Path) -> dict[str, str]:
    """{"files": sha256 of each top-level file's name, size and modification time}: a model folder edited
    in place (new weights, another tokenizer) gets a new cache key without hashing gigabytes."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
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


def load_pretrained(source: ModelSource, dtype: str = "float32", trust_remote_code: bool = False):
    """Tokenizer and base model (no LM head); a model that cannot be had fails fast with one clear message."""
    from transformers import AutoModel, AutoTokenizer

    kwargs = {
        "revision": source.revision if not source.local_only else None,
        "trust_remote_code": trust_remote_code,
    }
    local_only = source.local_only
    if not local_only:
        try:  # a copy in the local HF cache needs no network at all
            AutoTokenizer.from_pretrained(source.location, local_files_only=True, **kwargs)
            local_only = True
        except OSError:
            if reason := _hub_unreachable_reason():
                raise _load_failure(source, reason) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=local_only, **kwargs)
        model = AutoModel.from_pretrained(
            source.location, local_files_only=local_only, dtype=_torch_dtype(dtype), **kwargs
        )
    except (OSError, ValueError) as e:
        raise _load_failure(source, str(e).splitlines()[0]) from e
    return tokenizer, model.eval()


def _torch_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise SimreduceError(f"embedder.dtype={name!r} is not a torch dtype: use float32, bfloat16, float16 or auto.")
    return dtype


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def own_token_mask(encoding: dict, unk_token_id: int | None) -> torch.Tensor:
    """[B, T] mask of the tokens that carry the word: not padding, not BOS/CLS/SEP, not unknown.

    Pops `special_tokens_mask` from `encoding`, which is then ready to pass to the model.
    """
    mask = encoding["attention_mask"].bool() & ~encoding.pop("special_tokens_mask").bool()
    if unk_token_id is not None:
        mask &= encoding["input_ids"] != unk_token_id
    return mask


def pool_hidden_states(hidden: torch.Tensor, token_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, D] hidden states, [B, T] mask of each word's own tokens -> [B, D] word vectors."""
    mask = token_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    if pooling == "last":
        positions = torch.arange(token_mask.shape[1], device=token_mask.device)
        last = (positions * token_mask).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise SimreduceError(f"embedder.pooling={pooling!r} is not one of {POOLINGS}.")


class Embedder:
    """Embeds words with a transformer; the model is loaded on first use, so a cache hit never loads it."""

    def __init__(
        self,
        name: str,
        name_or_path: str,
        revision: str | None = None,
        layer: int = -1,
        pooling: str = "mean",
        batch_size: int = 64,
        max_length: int = 32,
        device: str = "auto",
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ):
        # Every argument, by name: the cache key takes all but those known not to change a vector, so a
        # setting added later is in the key unless someone decides otherwise.
        self.settings = {k: v for k, v in locals().items() if k != "self"}
        if pooling not in POOLINGS:
            raise SimreduceError(f"embedder.pooling={pooling!r} is not one of {POOLINGS}.")
        self.name = name
        self.source = resolve_model_source(name_or_path, revision)
        self.layer = layer
        self.pooling = pooling
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code

    def cache_key(self) -> dict[str, str]:
        """What makes two embeddings of the same words identical: every setting but those that only change
        how the work is done, the model's identity and, for a local folder, its files."""
        key = {k: str(v) for k, v in self.settings.items() if k not in NOT_IN_CACHE_KEY}
        return {**key, "model": self.source.model_id, "revision": self.source.revision or "", **self.source.files}

    @torch.inference_mode()
    def embed(self, words: list[str]) -> torch.Tensor:
        """[N] words -> [N, D] float32 vectors on the CPU.

        Words are batched shortest first, so a batch pads to about its own words' length rather than the
        longest word's, and each batch's vectors are written into one preallocated [N, D] tensor: the peak
        memory is the result plus one batch of activations, whatever N is.
        """
        tokenizer, model = load_pretrained(self.source, self.dtype, self.trust_remote_code)
        n_states = model.config.num_hidden_layers + 1  # the embeddings, then one per layer
        if not -n_states <= self.layer < n_states:
            raise SimreduceError(
                f"embedder.layer={self.layer} is not a hidden state of {self.name} ({n_states} of them): "
                f"use -1 for the last, or 0..{n_states - 1}."
            )
        device = pick_device(self.device)
        model.to(device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right"
        order = sorted(range(len(words)), key=lambda i: len(words[i]))
        vectors = None
        for start in tqdm(range(0, len(words), self.batch_size), desc=f"embedding with {self.name}", unit="batch"):
            rows = order[start : start + self.batch_size]
            batch = [words[i] for i in rows]
            pooled = self._embed_batch(tokenizer, model, device, batch)
            if vectors is None:
                vectors = torch.empty(len(words), pooled.shape[1], dtype=torch.float32)
            vectors[rows] = pooled.float().cpu()
        return vectors

    def _embed_batch(self, tokenizer, model, device: torch.device, batch: list[str]) -> torch.Tensor:
        """[B] words -> [B, D] pooled hidden states, on `device`."""
        enc = tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        token_mask = own_token_mask(enc, tokenizer.unk_token_id)
        empty = [w for w, n in zip(batch, token_mask.sum(dim=1).tolist(), strict=True) if n == 0]
        if empty:
            raise SimreduceError(
                f"word(s) {shown(empty)} tokenize to nothing but special or unknown tokens with {self.name}: "
                "remove them from the word list."
            )
        out = model(**{k: v.to(device) for k, v in enc.items()}, output_hidden_states=True)
        return pool_hidden_states(out.hidden_states[self.layer], token_mask.to(device), self.pooling)


# The name runs logged before texts became a source give in their config.yaml, which compress instantiates.
WordEmbedder = Embedder
