"""Texts' lengths in tokens, counted as the model that embeds them counts them, and the length a plain model cuts
them to: known before the first batch runs, for the one warning that counts the texts cut."""

from simreduce.runtime.errors import SimreduceError

NO_LIMIT = 10**18  # a tokenizer.model_max_length this large is transformers' marker for "none stated" (1e30)


def token_counts(tokenizer, texts: list[str], chunk: int = 4096) -> list[int]:
    """Each text's length in tokens, special ones included, untruncated; a chunk at a time, so a large corpus is
    never held as token ids all at once."""
    return [
        len(ids)
        for start in range(0, len(texts), chunk)
        for ids in tokenizer(texts[start : start + chunk], verbose=False)["input_ids"]
    ]


def sentence_transformer_token_counts(model, texts: list[str]) -> list[int]:
    """`token_counts` of what a SentenceTransformer's `encode` tokenizes: its default prompt in front, lowercased
    where its Transformer module says so (sentence-transformers < 5 lowercases the text, later ones in the
    tokenizer, so lowercasing again changes nothing)."""
    prompt = model.prompts.get(model.default_prompt_name, "") if model.default_prompt_name else ""
    lower_case = getattr(model[0], "do_lower_case", False)
    return token_counts(model.tokenizer, [(prompt + text).lower() if lower_case else prompt + text for text in texts])


def model_max_length(tokenizer, model) -> int:
    """The tokenizer's limit capped by the model's positions, as sentence-transformers caps it."""
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
