"""A sentence-transformers model's own pipeline (Transformer, Pooling, optionally Normalize), read from its files
and reproduced on plain `transformers` hidden states, so that sentence-transformers itself is not needed."""

import posixpath
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.model_files import ModelSource, read_model_json
from simreduce.vectors.pooling import pool_hidden_states

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
