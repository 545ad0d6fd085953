"""Vectors from a Hugging Face model: words (one hidden layer, pooled over each word's own tokens) and texts."""

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from simreduce.runtime import distributed
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.model_files import ModelSource, load_pretrained, resolve_model_source
from simreduce.vectors.pooling import POOLINGS, own_token_mask, pool_hidden_states
from simreduce.vectors.st_pipeline import SentenceTransformerPipeline, sentence_transformer_pipeline
from simreduce.vectors.words import shown

log = logging.getLogger(__name__)

# Embedder arguments that change how vectors are computed, not what they are (`name` is a label; the
# device and batch size change the last bits at most). The model's identity comes from its `ModelSource`.
NOT_IN_CACHE_KEY = ("name", "name_or_path", "batch_size", "device", "trust_remote_code")
NO_LIMIT = 10**18  # a tokenizer.model_max_length this large is transformers' marker for "none stated" (1e30)


def pick_device(device: str) -> torch.device:
    """`auto`: this process's GPU when there is one (each rank of a `trainer=ddp` job its own), else the CPU."""
    if device == "auto":
        return (
            torch.device("cuda", distributed.world().local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    return torch.device(device)


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
        float32 tensor in row order; a progress bar on rank 0 only (every rank logs its share's time)."""
        vectors = None
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc=desc, unit="batch", disable=not distributed.is_rank_zero()):
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
