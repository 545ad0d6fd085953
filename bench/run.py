"""simreduce's benchmark: where the time goes, as ratios measured side by side in one process run.

    python bench/run.py                      # training, sweep, evaluation (a few minutes on 2 cores)
    python bench/run.py --only scale         # 100k x 2048 vectors through train.py (about 5-10 minutes)
    python bench/run.py --only embedding     # 50k words embedded by the default model
    python bench/run.py --only overhead      # the sweep against plain torch, cold against warm, compress (~6 min)
    python bench/run.py --only vector_file   # 1M x 768 vectors in a .npy: train.py data=vectors, compress (~10 min)
    python bench/run.py --only nested        # a nested encoder against per-size ones, 512 and 20k words (~5 min)
    python bench/run.py --only loss_cost     # the cosine loss's two exact forms, and the one training picks (~5 min)
    python bench/run.py --only ddp           # one job in 1 and 2 processes (torchrun, trainer=ddp), on the CPU
    python bench/run.py --only training --accelerator gpu

Prints markdown tables. Not a test: figures depend on the machine and on what else runs on it, which is
why each comparison alternates its two sides and keeps the best of several tries.
"""

import argparse
import os

import torch
from common import machine_summary

BENCHES = (
    "training",
    "sweep",
    "evaluation",
    "scale",
    "embedding",
    "overhead",
    "vector_file",
    "nested",
    "ddp",
    "loss_cost",
)
DEFAULT = ("training", "sweep", "evaluation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated, from {', '.join(BENCHES)}")
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator for the training bench")
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps a training comparison runs")
    parser.add_argument("--repeats", type=int, default=3, help="tries per side, best kept")
    parser.add_argument("--dims", default="16,256,1024", help="encoder sizes for the training bench")
    parser.add_argument("--sweep-dims", default="16,32,64,128,256")
    parser.add_argument("--eval-sizes", default="512,2048,8192,16384,50000")
    parser.add_argument("--scale-n", type=int, default=100_000)
    parser.add_argument("--scale-dim", type=int, default=64)
    parser.add_argument("--embed-words", type=int, default=50_000)
    parser.add_argument("--nested-words", type=int, default=20_000, help="the nested bench's mini-batch case")
    parser.add_argument("--threads", type=int, help="CPU threads for torch here and in train.py runs (e.g. 2)")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for the sweep and scale runs")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench {sorted(unknown)}: pick from {BENCHES}")

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the train.py processes
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.accelerator in ("gpu", "cuda") else "cpu")
    print(f"machine: {machine_summary(device)}")
    if "training" in chosen:
        import training

        dims = [int(d) for d in args.dims.split(",")]
        training.run(512, 2048, dims, args.steps, args.accelerator, args.repeats)
    if "sweep" in chosen:
        import sweep

        sweep.run(args.sweep_dims, args.overrides)
    if "evaluation" in chosen:
        import evaluation_cost

        evaluation_cost.run([int(n) for n in args.eval_sizes.split(",")], d=384, dim=64)
    if "scale" in chosen:
        import scale

        scale.run(args.scale_n, 2048, args.scale_dim, args.overrides)
    if "overhead" in chosen:
        import overhead

        overhead.run(args.sweep_dims, args.repeats)
    if "vector_file" in chosen:
        import vector_file

        vector_file.run(extra=args.overrides)
    if "nested" in chosen:
        import nested

        nested.run([int(d) for d in args.sweep_dims.split(",")], args.nested_words, max_rows=2000)
    if "loss_cost" in chosen:
        import loss_cost

        loss_cost.run([256, 512, 1024, 2048, 4096], 384, [int(d) for d in args.sweep_dims.split(",")], args.repeats)
        loss_cost.run([1024, 4096, 8192], 2048, [int(d) for d in args.sweep_dims.split(",")], args.repeats)
    if "ddp" in chosen:
        import ddp

        ddp.run()
    if "embedding" in chosen:
        import embedding_cost

        embedding_cost.run(args.embed_words, args.overrides)


if __name__ == "__main__":
    main()
