"""Make embedding vectors smaller while keeping their cosine similarities.

`simreduce train` trains and logs reducers (a Hydra run or sweep), `select` picks a sweep's winner, `compress`
applies a logged reducer to new vectors, `export` writes one as a sentence-transformers model, and `floor`
computes the loss no reducer of the cosine loss can beat.
"""

import argparse
import logging
import sys
from pathlib import Path

from simreduce.experiment.alias_policy import REGISTER_POLICIES
from simreduce.experiment.config import config_group
from simreduce.runtime.errors import exit_on_user_error
from simreduce.runtime.signals import stop_signals_deferred


def target_value(text: str) -> float | None:
    """`--target`: a number, or none/null for the tolerance rule."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or none for the tolerance rule)") from None


def build_parser() -> argparse.ArgumentParser:
    select_defaults = config_group("select")  # what `simreduce train` selects with, so both agree
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--tracking-uri",
        help="the MLflow store (default: mlruns/mlflow.db under SIMREDUCE_ROOT, else the working directory)",
    )
    parser = argparse.ArgumentParser(prog="simreduce", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "train",
        add_help=False,  # `simreduce train --help` is Hydra's: the config groups and their options
        help="train and log reducers: `simreduce train -m encoder.dim=16,32,64` (Hydra overrides; --help lists them)",
    ).add_argument("overrides", nargs=argparse.REMAINDER)

    select = commands.add_parser(
        "select",
        parents=[store],
        help="rank a sweep's runs, log its summary run, register the winner",
        description="Rank a sweep's runs, print the table and the winner, log the summary run `sweep-<id>` "
        "and register the winner as a version of simreduce-<source>-<data name>, moving its @winner alias as "
        "--register says.",
    )
    select.add_argument("--experiment", help="MLflow experiment (default: wherever the sweep wrote)")
    select.add_argument("--sweep", help="sweep id, the `sweep_id` tag of its runs (default: the latest sweep)")
    select.add_argument(
        "--tolerance",
        type=float,
        default=select_defaults.tolerance,
        help="the winner is the smallest dim whose score is within this share of the best (default: %(default)s, "
        "select.tolerance of simreduce train)",
    )
    select.add_argument(
        "--metric",
        default=select_defaults.metric,
        help="the metric the target is on, any logged one (default: %(default)s, select.metric of simreduce train)",
    )
    select.add_argument(
        "--target",
        type=target_value,
        default=select_defaults.target,
        help="the winner is the cheapest candidate whose metric reaches this (>=; <= for rmse-like metrics); "
        "none: the tolerance rule (default: %(default)s, select.target of simreduce train)",
    )
    select.add_argument(
        "--register",
        choices=REGISTER_POLICIES,
        default=select_defaults.register,
        help="move the winner alias: auto (unless it holds a better model of the same data), always, never "
        "(default: %(default)s, select.register of simreduce train)",
    )
    select.add_argument(
        "--export-to",
        type=Path,
        default=select_defaults.export_to,
        help="a new folder: the winner exported there as a sentence-transformers model, as simreduce export does "
        "(default: %(default)s, select.export_to of simreduce train)",
    )

    compress = commands.add_parser(
        "compress",
        parents=[store],
        help="reduce a file of vectors, words or texts with a logged reducer",
        description="Reduce vectors with a logged reducer and write them as the model stores them (float32, "
        "float16, int8 codes or packed sign bits) in .npy, or .parquet with ids. "
        "A file of vectors streams through in chunks; words and texts are embedded as the reducer's run did.",
    )
    compress.add_argument("--model", required=True, help="e.g. models:/simreduce-words-minilm@winner")
    compress.add_argument(
        "--input",
        required=True,
        type=Path,
        help="vectors (.npy, .npz, .safetensors, .parquet, .fvecs), or words / texts (.txt, .jsonl, .csv, .parquet "
        "with a text column) for a reducer trained on words / texts",
    )
    compress.add_argument("--key", help=".npz / .safetensors input: the array's name (default: the only one)")
    compress.add_argument("--column", help=".parquet / .jsonl / .csv input: the column of vectors or texts")
    compress.add_argument("--id-column", help="the input's column naming its rows, kept in a .parquet output")
    compress.add_argument(
        "--output",
        required=True,
        type=Path,
        help="[N, dim] .npy of the model's precision ([N, ceil(dim*b/8)] uint8 for binary and the b-bit codes, "
        "int4..int1 and pq4..pq1), or .parquet with columns id (the --id-column or row numbers) and embedding",
    )
    compress.add_argument(
        "--dim",
        type=int,
        help="a nested model's prefix to keep, e.g. 64 (default: all its outputs)",
    )
    compress.add_argument(
        "--faiss-index",
        type=Path,
        help="also write a faiss index (.faiss) holding the output, searched with raw query vectors: the "
        "reducer's map as its pre-transform, the stored form's tables as its quantizer (a linear reducer's)",
    )
    compress.add_argument(
        "--drop-bad-rows",
        action="store_true",
        help="leave rows that are NaN/inf or all zero out of the output (default: refuse such input)",
    )

    export = commands.add_parser(
        "export",
        parents=[store],
        help="write a logged reducer of texts or words as a sentence-transformers model folder",
        description="Write the reducer's run's embedder followed by the reducer (standard sentence-transformers "
        "modules, safetensors, no code of its own) as a model folder whose encode returns the reduced vectors, "
        "and log it with MLflow's sentence_transformers flavour on the reducer's run. Its stored form's constants "
        "travel in the folder (simreduce.json says how to get compress's codes).",
    )
    export.add_argument("--model", required=True, help="e.g. models:/simreduce-texts-notes-minilm@winner")
    export.add_argument("--to", required=True, type=Path, help="the folder to write: new, or empty")
    export.add_argument(
        "--no-log", action="store_true", help="write the folder only, without logging it to the reducer's run"
    )

    floor = commands.add_parser(
        "floor",
        help="the lowest cosine loss any dim-d embedding of the training words reaches",
        description="Optimise free unit-norm coordinates of the training words (L-BFGS) per dim: the floor of "
        "the cosine loss, to compare a run's fit/rmse^2 with.",
    )
    floor.add_argument(
        "--dims", type=lambda s: [int(d) for d in s.split(",")], help="e.g. 16,32 (default: floor.dims of the config)"
    )
    floor.add_argument("overrides", nargs="*", help="simreduce train's Hydra overrides, e.g. data.n_words=1000")
    return parser


def show_logs() -> None:
    """Warnings, and our own info lines (dropped words, cache rebuilds), on stderr. Done first: MLflow's
    PyTorch flavour calls `logging.basicConfig(level=ERROR)` when imported, which would hide them."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("simreduce").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # Hydra reads the command line itself, its own --help included
        from simreduce.experiment.train import train

        sys.argv = ["simreduce train", *argv[1:]]
        train()
        return
    args = build_parser().parse_args(argv)
    show_logs()
    with exit_on_user_error():
        if args.command == "floor":
            from simreduce.experiment.floor import floor_report

            print("\n".join(floor_report(args.overrides, args.dims)))
            return
        store_uri = args.tracking_uri or config_group("paths").store_uri
        if args.command == "compress":
            from simreduce.compress import compress_file
            from simreduce.vectors.vector_files import VectorFileSpec

            spec = VectorFileSpec(args.input, args.key, args.column, args.id_column)
            written = compress_file(
                store_uri, args.model, spec, args.output, args.drop_bad_rows, args.dim, args.faiss_index
            )
            dropped = f" ({written.n_dropped} bad row(s) left out)" if written.n_dropped else ""
            print(f"wrote {written.n_rows} x {written.dim} vectors as {written.precision} to {args.output}{dropped}")
            if args.faiss_index:
                print(f"wrote a faiss index of them to {args.faiss_index}: faiss.read_index(path).search(queries, k)")
            return
        if args.command == "export":
            from simreduce.experiment.export import export_model

            print(export_model(store_uri, args.model, args.to, log=not args.no_log).report())
            return
        from simreduce.experiment.selection import make_target
        from simreduce.experiment.summary import (
            summarise_sweep,  # MLflow's import is deferred so that --help stays quick
        )
        from simreduce.experiment.tracking import TrackingStore

        if args.export_to:
            from simreduce.experiment.export import check_folder

            check_folder(args.export_to, "--export-to")
        with stop_signals_deferred():  # a stop ends the summary run KILLED, registering nothing
            target = make_target(args.metric, args.target)
            summaries = summarise_sweep(
                TrackingStore.open(store_uri),
                args.sweep,
                args.tolerance,
                args.experiment,
                register=args.register,
                target=target,
            )
        for result in summaries:
            print(result.report())
        if args.export_to:
            from simreduce.experiment.export import export_winners

            for exported in export_winners(store_uri, summaries, str(args.export_to)):
                print(exported.report())


if __name__ == "__main__":
    main()
