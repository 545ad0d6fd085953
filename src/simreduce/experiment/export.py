"""A logged reducer as a sentence-transformers model: `simreduce export`, and `select.export_to` at a sweep's end.

The folder loads with `SentenceTransformer(folder)` and runs no code of its own (`trust_remote_code` off), its
weights in safetensors: the run's embedder (a sentence-transformers model as it is, every module included; any
other model as the run embedded texts: a `Transformer` giving hidden state `embedder.layer` and a `Pooling` of
`embedder.pooling` over all tokens) and then the reducer's map as `Dense` modules, one per linear layer (GELU
after each but the last, identity after the last). `encode` returns what compress reduces before it stores: the
map's float32 output. Nothing normalises it: cosine, the yardstick, does not see a vector's length, and the
stored forms were calibrated on the vectors as they are.

The stored form travels in the folder: `simreduce.json` names it (and a nested model's prefixes), its constants
are in `simreduce_stored.safetensors`. What compress stores is then
- float16: `encode(texts).astype(np.float16)`;
- int8: `quantize_embeddings(encode(texts), "int8", ranges=ranges)`, the file's `ranges` [2, dim]:
  sentence-transformers' recipe is ours (floor, clip to 0..255, shift by -128), these ranges give our steps;
- binary: `encode(texts, precision="ubinary")`;
- int4, int2, int1 and the product codes, whose rotation no sentence-transformers recipe has:
  `stored_codes(folder, encode(texts))` below, which serves every form.
A nested winner's prefixes: `SentenceTransformer(folder, truncate_dim=64)` gives what `compress --dim 64` does
(int8: the first 64 columns of `ranges`). A words winner becomes a text model too (`WORDS_NOTE` says how it differs).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from simreduce.reducers.precision import INT8_LEVELS, StoredPrecision
from simreduce.runtime.atomic import atomic_folder
from simreduce.runtime.errors import SimreduceError

INFO_FILE = "simreduce.json"  # the stored form, the prefixes, where the model came from
STORED_FILE = "simreduce_stored.safetensors"  # the stored form's constants, and int8's `ranges`
ST_POOLING = {"mean": "mean", "cls": "cls", "last": "lasttoken"}  # embedder.pooling -> sentence-transformers'
RECIPES = {
    "float32": "encode(texts)",
    "float16": "encode(texts).astype(numpy.float16)",
    "int8": 'quantize_embeddings(encode(texts), "int8", ranges=safetensors.numpy.load_file(STORED)["ranges"])',
    "binary": 'encode(texts, precision="ubinary")',
}
WORDS_NOTE = (
    "trained on words: encode pools all of a text's tokens, special ones included, where a word was pooled over "
    "its own tokens: its vectors are close to compress's, not equal"
)


@dataclass(frozen=True)
class Exported:
    folder: Path
    dim: int
    precision: str
    prefix_dims: tuple[int, ...]
    text_model_uri: str | None  # the same model logged with MLflow's sentence_transformers flavour
    note: str = ""

    def report(self) -> str:
        nested = f", prefixes {', '.join(map(str, self.prefix_dims))} (truncate_dim)" if self.prefix_dims else ""
        logged = f"; logged as {self.text_model_uri}" if self.text_model_uri else ""
        note = f"\nnote: {self.note}" if self.note else ""
        return (
            f"exported a sentence-transformers model to {self.folder}: {self.dim}-d vectors{nested}, stored as "
            f"{self.precision}: {stored_recipe(self.precision)}{logged}{note}"
        )


def stored_recipe(precision: str) -> str:
    recipe = RECIPES.get(precision, "simreduce.experiment.export.stored_codes(folder, encode(texts))")
    return recipe.replace("STORED", repr(STORED_FILE))


def check_folder(folder: Path, setting: str = "--to") -> None:
    """An export's folder is new or empty: nothing a user holds is overwritten."""
    if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())):
        raise SimreduceError(f"{setting} {str(folder)!r} exists and is not an empty folder: pass a new folder.")


def export_model(store_uri: str, model_uri: str, folder: Path, log: bool = True) -> Exported:
    """The reducer at `model_uri` (see `load_reducer`) after its run's embedder, as a sentence-transformers model
    folder written whole at `folder` (new, or an empty folder); with `log`, also logged with MLflow's
    sentence_transformers flavour on the reducer's run. A reducer of a file of vectors has no embedder, and is
    refused in one line."""
    check_folder(folder)
    from hydra.utils import instantiate

    from simreduce.experiment.tracking import TrackingStore
    from simreduce.experiment.tracking.registry import load_reducer, run_config
    from simreduce.experiment.tracking.text_model import log_text_model

    store = TrackingStore.open(store_uri)
    reducer = load_reducer(store, model_uri)
    if reducer.run_id is None:
        raise SimreduceError(
            f"model {model_uri!r} has no MLflow run to take its embedder from: export a model simreduce train "
            "logged, e.g. models:/simreduce-texts-corpus-minilm@winner."
        )
    source_kind = store.run_tags(reducer.run_id).get("source")
    if source_kind not in ("texts", "words"):
        raise SimreduceError(
            f"model {model_uri!r} reduces vectors from a file, with no embedder: it cannot be a text model. "
            f"Reduce vectors with `simreduce compress --model {model_uri} --input vectors.npy --output reduced.npy`."
        )
    cfg = run_config(store, reducer.run_id)
    embedder = instantiate(cfg.embedder)
    if embedder.trust_remote_code:
        raise SimreduceError(
            f"model {model_uri!r} embeds with embedder.trust_remote_code=true, code of its model's own, and an "
            "exported folder runs none: export works for embedders that need no remote code."
        )
    model = text_model(embedder, source_kind, cfg.data.get("max_length"))
    if (width := model.get_embedding_dimension()) != reducer.in_dim:
        raise SimreduceError(
            f"model {model_uri!r} takes {reducer.in_dim}-d vectors but its run's embedder gives {width}-d ones: "
            "its run's config no longer describes the model it embedded with; train it again."
        )
    for module in reducer_modules(reducer.net):
        model.append(module)
    model.similarity_fn_name = "cosine"
    info = {
        "precision": reducer.stored.name,
        "dim": reducer.dim,
        "prefix_dims": list(reducer.prefix_dims),
        "stored": stored_recipe(reducer.stored.name),
        "model": model_uri,
        "run_id": reducer.run_id,
        "trained_on": source_kind,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        model.save(str(tmp), create_model_card=False)
        write_stored_form(tmp, reducer.stored, info)
    logged = log_text_model(store, reducer.run_id, model, folder, [INFO_FILE, STORED_FILE]) if log else None
    note = WORDS_NOTE if source_kind == "words" else ""
    return Exported(folder, reducer.dim, reducer.stored.name, reducer.prefix_dims, logged, note)


def export_winners(store_uri: str, summaries: list, export_to: str) -> list[Exported]:
    """`select.export_to`: each selected sweep's winner (its registered version) exported there, into a folder per
    registered model when the sweep wrote to several experiments."""
    exported = []
    for summary in summaries:
        if (registration := summary.registration) is None:
            raise SimreduceError(
                f"select.export_to={export_to!r}: winner {summary.selection.winner.run} logged no model "
                "(tracking.log_model=false), so there is nothing to export."
            )
        folder = Path(export_to) if len(summaries) == 1 else Path(export_to) / registration.name
        model_uri = f"models:/{registration.name}/{registration.version}"
        exported.append(export_model(store_uri, model_uri, folder))
    return exported


def text_model(embedder, source_kind: str, max_length: int | None):
    """The run's embedder as a sentence-transformers model on the CPU, giving the vectors its source embedded."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from simreduce.vectors.model_files import (
        load_sentence_transformer,
        sentence_transformer_modules,
        transformer_module,
    )
    from simreduce.vectors.text_lengths import model_max_length

    if source_kind == "texts" and sentence_transformer_modules(embedder.source) is not None:
        model = load_sentence_transformer(embedder.source, torch.device("cpu"), embedder.dtype)
        if max_length:
            model.max_seq_length = max_length
        return model
    transformer = transformer_module(embedder.source, embedder.layer, embedder.dtype)
    transformer.max_seq_length = max_length or model_max_length(transformer.tokenizer, transformer.auto_model)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=ST_POOLING[embedder.pooling])
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def reducer_modules(net: nn.Sequential) -> list[nn.Module]:
    """A `build_mlp` map as sentence-transformers `Dense` modules: one per linear layer, with the GELU that
    follows it as its activation, identity after the last."""
    from sentence_transformers.sentence_transformer.modules import Dense

    layers, modules = list(net), []
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            continue
        gelu = i + 1 < len(layers) and isinstance(layers[i + 1], nn.GELU)
        dense = Dense(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            activation_function=nn.GELU() if gelu else nn.Identity(),
        )
        dense.linear.load_state_dict(layer.state_dict())
        modules.append(dense)
    return modules


def int8_ranges(starts: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """[2, dim] float32 minimum and maximum from which `quantize_embeddings(..., ranges=...)` computes exactly our
    `steps` ((maximum - minimum) / 255 in float32, a zero range giving 1, as ours): the training rows' maximum
    gives them, and is found again from `starts + 255 * steps` by moving it a float at a time."""
    starts, steps = starts.astype(np.float32), steps.astype(np.float32)
    tops = np.where(steps == 1, starts, starts + steps * np.float32(INT8_LEVELS))
    for _ in range(64):
        found = (tops - starts) / np.float32(INT8_LEVELS)
        found = np.where(found == 0, 1, found)
        if np.array_equal(found, steps):
            return np.stack([starts, tops])
        tops = np.where(
            found > steps, np.nextafter(tops, -np.inf), np.where(found < steps, np.nextafter(tops, np.inf), tops)
        )
    raise ValueError("no float32 maxima give these int8 steps")


def write_stored_form(folder: Path, stored: StoredPrecision, info: dict) -> None:
    from safetensors.torch import save_file

    tensors = stored.constants()
    if stored.name == "int8":
        tensors["ranges"] = torch.from_numpy(int8_ranges(stored.starts, stored.steps))
    if tensors:
        save_file({name: t.contiguous() for name, t in tensors.items()}, str(folder / STORED_FILE))
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def stored_codes(folder: str | Path, embeddings: np.ndarray) -> np.ndarray:
    """[N, w] float32 vectors from `SentenceTransformer(folder).encode` -> what `simreduce compress` stores for the
    same texts: [N, w] float32, float16 or int8 codes, or [N, ceil(w * b / 8)] uint8 (packed sign bits, b-bit or
    product codes). `w` is the folder's dim, or one of a nested model's prefixes (`truncate_dim`)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    info = json.loads((folder / INFO_FILE).read_text())
    constants = load_file(str(folder / STORED_FILE)) if (folder / STORED_FILE).is_file() else {}
    constants.pop("ranges", None)
    stored = StoredPrecision(info["precision"], **constants)
    width = embeddings.shape[1]
    if width != info["dim"]:
        if width not in info["prefix_dims"]:
            raise SimreduceError(
                f"{width}-d vectors are no output of {str(folder)!r}: it gives {info['dim']}-d vectors"
                + (f", or prefixes of {', '.join(map(str, info['prefix_dims']))}." if info["prefix_dims"] else ".")
            )
        stored = stored.prefix(width)
    return stored.encode(embeddings)
