"""How a transformer's hidden states become one vector per word or text: pooled over a mask of the tokens that
carry it."""

import torch

from simreduce.runtime.errors import SimreduceError

POOLINGS = ("mean", "last", "cls")


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

    `cls` is the first masked token, `last` the last.
    """
    if pooling == "mean":
        mask = token_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    if pooling in ("last", "cls"):
        positions = torch.arange(token_mask.shape[1], device=token_mask.device)
        picked = (positions * token_mask).argmax(dim=1) if pooling == "last" else token_mask.int().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), picked]
    raise SimreduceError(f"embedder.pooling={pooling!r} is not one of {POOLINGS}.")
