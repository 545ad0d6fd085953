"""Vectors from a Hugging Face model: words (one hidden layer, pooled over each word's own tokens) and texts (by
sentence-transformers itself for a sentence-transformers model, else one hidden layer pooled over all tokens)."""

import logging
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from simreduce.runtime import distributed
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.model_files import (
    load_pretrained,
    load_sentence_transformer,
    pad_on_the_right,
    resolve_model_source,
    sentence_transformer_modules,
)
from simreduce.vectors.pooling import POOLINGS, own_token_mask, pool_hidden_states
from simreduce.vectors.rows import shown
from simreduce.vectors.text_lengths import model_max_length, sentence_transformer_token_counts, token_counts

log = logging.getLogger(__name__)
EmbedRows = Callable[[list[int]], torch.Tensor]  # rows of the input -> their [B, D] vectors, on the model's device

# Embedder arguments that change how vectors are computed, not what they are (`name` is a label; the
# device and batch size change the last bits at most). The model's identity comes from its `ModelSource`.
NOT_IN_CACHE_KEY = ("name", "name_or_path", "batch_size", "device", "trust_remote_code")


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
        """What makes two embeddings of the same words or texts identical: every setting but those that only change
        how the work is done, the model's identity and, for a local folder, its files."""
        key = {k: str(v) for k, v in self.settings.items() if k not in NOT_IN_CACHE_KEY}
        return {**key, "model": self.source.model_id, "revision": self.source.revision or "", **self.source.files}

    def text_pooling_key(self, max_length: int | None = None) -> dict[str, str]:
        """How `embed_texts(texts, max_length)` turns token vectors into a text's vector, for the cache key; read
        from the model's modules.json at most, so a cache hit never loads the model.

        A sentence-transformers model is named by its modules (`st:Transformer+Pooling+Normalize`): their configs
        and weights are the model's files, already in `cache_key`. So is the model's own limit, which a
        `text_max_length` of "model" stands for.
        """
        modules = sentence_transformer_modules(self.source)
        if modules is None:
            key = {"text_pooling": self.pooling, "text_layer": str(self.layer)}
        else:
            key = {"text_pooling": "st:" + "+".join(modules)}
        return {**key, "text_max_length": str(max_length) if max_length else "model"}

    @torch.inference_mode()
    def embed(self, words: list[str]) -> torch.Tensor:
        """[N] words -> [N, D] float32 vectors on the CPU.

        Words are batched shortest first, so a batch pads to about its own words' length rather than the
        longest word's, and each batch's vectors are written into one preallocated [N, D] tensor: the peak
        memory is the result plus one batch of activations, whatever N is. A sentence-transformers model's
        words too are pooled from its transformer's hidden states, over their own tokens only.
        """
        if self.pooling == "cls":
            raise SimreduceError("embedder.pooling=cls is for texts; words use mean or last.")
        tokenizer, model, device = self._load()
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

        A sentence-transformers model embeds with sentence-transformers' own `encode`, all its modules included
        (prompt, Pooling, Dense, Normalize...); any other model pools hidden state `layer` over all of a text's
        tokens, special ones included, with `pooling`.
        """
        check_texts(texts)
        modules = sentence_transformer_modules(self.source)
        if modules is None:
            lengths, limit, embed_rows = self._plain_text_embedder(texts, max_length)
        else:
            lengths, limit, embed_rows = self._sentence_transformer_embedder(texts, max_length, modules)
        if n_long := sum(n > limit for n in lengths):
            log.warning(
                f"{n_long} of {len(texts)} texts are longer than {limit} tokens and are cut to their first {limit}."
            )
        # Longest first: the batch that needs the most memory runs first, so running out of it shows in seconds,
        # not at the end, and the progress bar's estimate errs long. Sorted by length, a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        return self._in_batches(order, embed_rows, desc=f"embedding texts with {self.name}")

    def _plain_text_embedder(self, texts: list[str], max_length: int | None) -> tuple[list[int], int, EmbedRows]:
        """The texts' lengths in tokens, the length they are cut to, and `embed_rows(rows)` -> [B, D]: hidden state
        `layer` pooled over all of the rows' tokens with `pooling`."""
        tokenizer, model, device = self._load()
        self._check_layer(model)
        limit = max_length or model_max_length(tokenizer, model)

        def embed_rows(rows: list[int]) -> torch.Tensor:
            enc = tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = model(**enc, output_hidden_states=True).hidden_states[self.layer]
            return pool_hidden_states(hidden, enc["attention_mask"], self.pooling)

        return token_counts(tokenizer, texts), limit, embed_rows

    def _sentence_transformer_embedder(
        self, texts: list[str], max_length: int | None, modules: list[str]
    ) -> tuple[list[int], int, EmbedRows]:
        """As `_plain_text_embedder`, by sentence-transformers' own `encode` and the model's `max_seq_length`."""
        self._warn_settings_unused(modules)
        model = load_sentence_transformer(self.source, pick_device(self.device), self.dtype, self.trust_remote_code)
        if max_length:
            model.max_seq_length = max_length

        def embed_rows(rows: list[int]) -> torch.Tensor:
            batch = [texts[i] for i in rows]
            return model.encode(batch, batch_size=len(batch), convert_to_tensor=True, show_progress_bar=False)

        return sentence_transformer_token_counts(model, texts), model.max_seq_length, embed_rows

    def _load(self) -> tuple:
        """Tokenizer (with a pad token, padding on the right), base model on its device, the device."""
        tokenizer, model = load_pretrained(self.source, self.dtype, self.trust_remote_code)
        device = pick_device(self.device)
        model.to(device)
        pad_on_the_right(tokenizer)
        return tokenizer, model, device

    def _check_layer(self, model) -> None:
        n_states = model.config.num_hidden_layers + 1  # the embeddings, then one per layer
        if not -n_states <= self.layer < n_states:
            raise SimreduceError(
                f"embedder.layer={self.layer} is not a hidden state of {self.name} ({n_states} of them): "
                f"use -1 for the last, or 0..{n_states - 1}."
            )

    def _warn_settings_unused(self, modules: list[str]) -> None:
        unused = [f"embedder.layer={self.layer}"] if self.layer != -1 else []
        unused += [f"embedder.pooling={self.pooling}"] if self.pooling != "mean" else []
        if unused:
            log.warning(
                f"texts ignore {' and '.join(unused)}: {self.name} is a sentence-transformers model, whose own "
                f"modules ({', '.join(modules)}) apply."
            )

    def _in_batches(self, order: list[int], embed_rows: EmbedRows, desc: str) -> torch.Tensor:
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
