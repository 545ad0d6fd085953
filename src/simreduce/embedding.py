"""Vectors from a Hugging Face model: words (one hidden layer, pooled over each word's own tokens) and texts."""

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import posixpath
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from simreduce.errors import SimreduceError
from simreduce.words import shown

log = logging.getLogger(__name__)

PACKAGE_SCHEME = "pkg://"
POOLINGS = ("mean", "last", "cls")
# Embedder arguments that change how vectors are computed, not what they are (`name` is a label; the
# device and batch size change the last bits at most). The model's identity comes from its `ModelSource`.
NOT_IN_CACHE_KEY = ("name", "name_or_path", "batch_size", "device", "trust_remote_code")
NO_LIMIT = 10**18  # a tokenizer.model_max_length this large is transformers' marker for "none stated" (1e30)


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
    """[B, T, D] hidden states, [B, T] mask of the tokens to pool (a word's own, or all of a text's) -> [B, D].

    `cls` is the first masked token, `last` the last; `max` and `mean_sqrt_len_tokens` are there for
    sentence-transformers models, whose Pooling module computes them the same way.
    """
    mask = token_mask.to(hidden.dtype).unsqueeze(-1)
    if pooling in ("mean", "mean_sqrt_len_tokens"):
        count = mask.sum(dim=1)
        return (hidden * mask).sum(dim=1) / (count if pooling == "mean" else count.sqrt())
    if pooling == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    if pooling in ("last", "cls"):
        positions = torch.arange(token_mask.shape[1], device=token_mask.device)
        picked = (positions * token_mask).argmax(dim=1) if pooling == "last" else token_mask.int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), picked]
    raise SimreduceError(f"embedder.pooling={pooling!r} is not one of {POOLINGS}.")


def read_model_json(source: ModelSource, filename: str) -> dict | list | None:
    """A small JSON file of the model, or None where it has none: from its folder or, for a hub id, from the
    local HF cache only, so reading one never waits on the network."""
    if source.local_only:
        path = Path(source.location) / filename
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.location, filename, revision=source.revision)
        path = Path(cached) if isinstance(cached, str) else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SimreduceError(f"{filename} of model {source.model_id!r} is not valid JSON ({e}): repair it.") from e


# sentence-transformers' Pooling modes this file reproduces, and the `pool_hidden_states` pooling of each.
ST_POOLINGS = {
    "cls": "cls",
    "max": "max",
    "mean": "mean",
    "mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "lasttoken": "last",
}
# A Pooling config.json of sentence-transformers < 6 sets a flag per mode; several concatenate in this order.
ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
ST_TRANSFORMER_CONFIGS = tuple(
    f"sentence_{arch}_config.json"
    for arch in ("bert", "roberta", "distilbert", "camembert", "albert", "xlm-roberta", "xlnet")
)
# sentence_bert_config.json settings read below or harmless (loading options such as the dtype, and FA2 unpadding:
# the last bits at most), and those that must keep their default for the token vectors to be plain `transformers` ones.
ST_TRANSFORMER_ANY = {
    "max_seq_length",
    "do_lower_case",
    "unpad_inputs",
    "model_args",
    "model_kwargs",
    "config_args",
    "config_kwargs",
}
ST_TRANSFORMER_DEFAULTS = {
    "transformer_task": "feature-extraction",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
    "module_output_name": "token_embeddings",
}
ST_MODULES = ("Transformer", "Pooling", "Normalize")
ST_WAY_OUT = (
    "pick another model, or copy its folder without modules.json to embed it as a plain transformer with "
    "embedder.pooling."
)


@dataclass(frozen=True)
class SentenceTransformerPipeline:
    """What sentence-transformers' `encode` does to texts with a model of Transformer, Pooling and optionally
    Normalize modules, read from the model's own files so that sentence-transformers itself is not needed."""

    transformer_path: str  # the folder of the transformer's files, "" for the model's own
    poolings: tuple[str, ...]  # Pooling modes, their vectors concatenated in this order
    normalize: bool
    max_seq_length: int | None
    lower_case: bool
    prompt: str  # the default prompt, put before every text
    include_prompt: bool  # whether the prompt's tokens are pooled too

    def describe(self) -> dict[str, str]:
        steps = [
            *self.poolings,
            *(["normalize"] if self.normalize else []),
            *(["lowercase"] if self.lower_case else []),
        ]
        prompt = {"text_prompt": self.prompt, "text_pool_prompt": str(self.include_prompt)} if self.prompt else {}
        return {"text_pooling": "st:" + "+".join(steps), **prompt}

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
        """[B, T, D] last hidden state -> [B, len(poolings) * D], as the Pooling and Normalize modules do."""
        mask = attention_mask
        if prompt_length and not self.include_prompt:
            positions = torch.arange(mask.shape[1], device=mask.device)
            first = mask.int().argmax(dim=1, keepdim=True)  # after any left padding
            mask = mask * (positions >= first + prompt_length)
        pooled = torch.cat([pool_hidden_states(hidden, mask, ST_POOLINGS[mode]) for mode in self.poolings], dim=-1)
        return F.normalize(pooled, p=2, dim=-1) if self.normalize else pooled


def sentence_transformer_pipeline(source: ModelSource) -> SentenceTransformerPipeline | None:
    """The model's sentence-transformers pipeline; None when it is not one (no modules.json, or a hub model whose
    modules.json is not in the local cache), and refused when it has a part this file does not reproduce."""
    modules = read_model_json(source, "modules.json")
    if modules is None:
        return None
    st_config = read_model_json(source, "config_sentence_transformers.json") or {}
    model_type = st_config.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        raise SimreduceError(f"model {source.model_id!r} is a sentence-transformers {model_type}: {ST_WAY_OUT}")
    types = [module["type"] for module in modules]
    kinds = [ref.rpartition(".")[2] if ref.startswith("sentence_transformers.") else ref for ref in types]
    if kinds not in (list(ST_MODULES[:2]), list(ST_MODULES)):
        odd = next((i for i, kind in enumerate(kinds) if i >= len(ST_MODULES) or kind != ST_MODULES[i]), len(kinds))
        what = f"a {types[odd]} module (module {odd})" if odd < len(kinds) else f"no {ST_MODULES[odd]} module"
        raise SimreduceError(
            f"sentence-transformers model {source.model_id!r} has {what}, and simreduce reproduces only "
            f"Transformer, Pooling, then optionally Normalize: {ST_WAY_OUT}"
        )
    transformer_path = modules[0].get("path", "")
    if transformer_path and not source.local_only:
        raise SimreduceError(
            f"sentence-transformers model {source.model_id!r} keeps its transformer in the subfolder "
            f"{transformer_path!r}, which simreduce reads only in a local folder: download the model and pass its "
            "folder as embedder.name_or_path."
        )
    configs = (read_model_json(source, posixpath.join(transformer_path, name)) for name in ST_TRANSFORMER_CONFIGS)
    transformer = next(filter(None, configs), {})
    unplain = sorted(
        key
        for key, value in transformer.items()
        if key not in ST_TRANSFORMER_ANY and value not in (None, {}, [], "", ST_TRANSFORMER_DEFAULTS.get(key))
    )
    if unplain:
        raise SimreduceError(
            f"sentence-transformers model {source.model_id!r} sets {unplain} for its transformer, which simreduce "
            f"does not reproduce: {ST_WAY_OUT}"
        )
    pooling = read_model_json(source, posixpath.join(modules[1].get("path", ""), "config.json")) or {}
    modes = pooling.get("pooling_mode") or [m for flag, m in ST_POOLING_FLAGS.items() if pooling.get(flag)] or "mean"
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    if unknown := [mode for mode in modes if mode not in ST_POOLINGS]:
        raise SimreduceError(
            f"sentence-transformers model {source.model_id!r} pools with {unknown}, and simreduce reproduces only "
            f"{list(ST_POOLINGS)}: {ST_WAY_OUT}"
        )
    return SentenceTransformerPipeline(
        transformer_path=transformer_path,
        poolings=modes,
        normalize=len(modules) == len(ST_MODULES),
        max_seq_length=transformer.get("max_seq_length"),
        lower_case=bool(transformer.get("do_lower_case")),
        prompt=(st_config.get("prompts") or {}).get(st_config.get("default_prompt_name")) or "",
        include_prompt=pooling.get("include_prompt", True),
    )


def check_texts(texts: list[str]) -> None:
    """Refuses an empty corpus and any empty text, which has no tokens of its own to pool."""
    if not texts:
        raise SimreduceError("there are no texts to embed: the corpus is empty.")
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            what = "empty or whitespace only" if isinstance(text, str) else f"a {type(text).__name__}, not a string"
            raise SimreduceError(f"text {row} (counting from 0) is {what}: drop it from the corpus or fill it in.")


def token_counts(tokenizer, texts: list[str], chunk: int = 4096) -> list[int]:
    """Each text's length in tokens, special ones included, untruncated; a chunk at a time, so a large corpus is
    never held as token ids all at once."""
    return [
        len(ids)
        for start in range(0, len(texts), chunk)
        for ids in tokenizer(texts[start : start + chunk], verbose=False)["input_ids"]
    ]


class Embedder:
    """Embeds words or texts with a transformer; the model is loaded on first use, so a cache hit never loads it."""

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

    def text_pooling_key(self, max_length: int | None = None) -> dict[str, str]:
        """How `embed_texts(texts, max_length)` turns token vectors into a text's vector, for the cache key; read
        from the model's small JSON files only, so a cache hit never loads the model.

        A `text_max_length` of "model" is the model's own limit, which its files, already in `cache_key`, fix.
        """
        pipeline = sentence_transformer_pipeline(self.source)
        if pipeline is None:
            key = {"text_pooling": self.pooling, "text_layer": str(self.layer)}
        else:
            key = pipeline.describe()
        limit = max_length or (pipeline and pipeline.max_seq_length)
        return {**key, "text_max_length": str(limit) if limit else "model"}

    @torch.inference_mode()
    def embed(self, words: list[str]) -> torch.Tensor:
        """[N] words -> [N, D] float32 vectors on the CPU.

        Words are batched shortest first, so a batch pads to about its own words' length rather than the
        longest word's, and each batch's vectors are written into one preallocated [N, D] tensor: the peak
        memory is the result plus one batch of activations, whatever N is.
        """
        if self.pooling == "cls":
            raise SimreduceError("embedder.pooling=cls is for texts; words use mean or last.")
        tokenizer, model, device = self._load(self.source, padding_side="right")
        self._check_layer(model)
        order = sorted(range(len(words)), key=lambda i: len(words[i]))
        return self._in_batches(
            order,
            lambda rows: self._embed_batch(tokenizer, model, device, [words[i] for i in rows]),
            desc=f"embedding with {self.name}",
        )

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], max_length: int | None = None) -> torch.Tensor:
        """[N] texts -> [N, D] float32 vectors on the CPU, each text cut to `max_length` tokens (None: the model's
        own limit).

        A sentence-transformers model embeds as sentence-transformers would, from its own files; any other model
        pools hidden state `layer` over all of a text's tokens, special ones included, with `pooling`.
        """
        check_texts(texts)
        pipeline = sentence_transformer_pipeline(self.source)
        if pipeline is None:
            source, prompt, lower_case = self.source, "", False
        else:
            self._warn_settings_unused(pipeline)
            source = self.source
            if pipeline.transformer_path:  # only in a local folder, so a path
                source = replace(source, location=str(Path(source.location) / pipeline.transformer_path))
            prompt, lower_case = pipeline.prompt, pipeline.lower_case
        tokenizer, model, device = self._load(source, padding_side=None if pipeline else "right")
        if pipeline is None:
            self._check_layer(model)
        # sentence-transformers lowercases with a normalizer in front of the tokenizer's own: the same as here.
        inputs = [(prompt + text).lower() if lower_case else prompt + text for text in texts]
        limit = max_length or self._model_max_length(tokenizer, model, pipeline)
        lengths = token_counts(tokenizer, inputs)
        if n_long := sum(n > limit for n in lengths):
            log.warning(
                f"{n_long} of {len(texts)} texts are longer than {limit} tokens and are cut to their first {limit}."
            )
        prompt_length = self._prompt_length(tokenizer, prompt.lower() if lower_case else prompt, limit)

        def embed_rows(rows: list[int]) -> torch.Tensor:
            enc = tokenizer(
                [inputs[i] for i in rows], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            if pipeline is not None:
                return pipeline.pool(model(**enc).last_hidden_state, enc["attention_mask"], prompt_length)
            hidden = model(**enc, output_hidden_states=True).hidden_states[self.layer]
            return pool_hidden_states(hidden, enc["attention_mask"], self.pooling)

        # Longest first: the batch that needs the most memory runs first, so running out of it shows in seconds,
        # not at the end, and the progress bar's estimate errs long. Sorted by length, a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        return self._in_batches(order, embed_rows, desc=f"embedding texts with {self.name}")

    def _load(self, source: ModelSource, padding_side: str | None) -> tuple:
        """Tokenizer (with a pad token, padding on `padding_side` unless None), model on its device, the device."""
        tokenizer, model = load_pretrained(source, self.dtype, self.trust_remote_code)
        device = pick_device(self.device)
        model.to(device)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if padding_side is not None:
            tokenizer.padding_side = padding_side
        return tokenizer, model, device

    def _check_layer(self, model) -> None:
        n_states = model.config.num_hidden_layers + 1  # the embeddings, then one per layer
        if not -n_states <= self.layer < n_states:
            raise SimreduceError(
                f"embedder.layer={self.layer} is not a hidden state of {self.name} ({n_states} of them): "
                f"use -1 for the last, or 0..{n_states - 1}."
            )

    def _warn_settings_unused(self, pipeline: SentenceTransformerPipeline) -> None:
        unused = [f"embedder.layer={self.layer}"] if self.layer != -1 else []
        unused += [f"embedder.pooling={self.pooling}"] if self.pooling != "mean" else []
        if unused:
            log.warning(
                f"texts ignore {' and '.join(unused)}: {self.name} is a sentence-transformers model, whose own "
                f"pipeline ({pipeline.describe()['text_pooling']}, on the last layer) applies."
            )

    @staticmethod
    def _model_max_length(tokenizer, model, pipeline: SentenceTransformerPipeline | None) -> int:
        """sentence-transformers' `max_seq_length`, else the tokenizer's limit capped by the model's positions, as
        sentence-transformers caps it."""
        if pipeline is not None and pipeline.max_seq_length:
            return pipeline.max_seq_length
        limit = tokenizer.model_max_length
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limit = min(limit, positions)
        if limit >= NO_LIMIT:
            raise SimreduceError(
                "the model states no maximum input length (no model_max_length, no max_position_embeddings): "
                "pass max_length."
            )
        return limit

    @staticmethod
    def _prompt_length(tokenizer, prompt: str, limit: int) -> int:
        """The prompt's tokens at the start of every text as sentence-transformers counts them: any leading special
        token included, a trailing one not."""
        if not prompt:
            return 0
        ids = tokenizer(prompt, truncation=True, max_length=limit)["input_ids"]
        return len(ids) - (ids[-1] in tokenizer.all_special_ids)

    def _in_batches(self, order: list[int], embed_rows: Callable[[list[int]], torch.Tensor], desc: str) -> torch.Tensor:
        """Rows `batch_size` at a time in `order`, each batch's [B, D] vectors written into one preallocated [N, D]
        float32 tensor in row order."""
        vectors = None
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch"):
            rows = order[start : start + self.batch_size]
            pooled = embed_rows(rows)
            if vectors is None:
                vectors = torch.empty(len(order), pooled.shape[1], dtype=torch.float32)
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
