"""The `medft` command: one subcommand per stage, each a thin call into the library.

Heavy imports (torch, transformers) happen inside the handlers, so `medft --help`
answers at once. A `MedftError` is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from medft.errors import MedftError

# prepare -------------------------------------------------------------------------------------


def add_common_prepare_options(parser: argparse.ArgumentParser, val_size: float) -> None:
    parser.add_argument("--output", required=True, type=Path, help="folder to write to")
    parser.add_argument(
        "--val-size", type=float, default=val_size, help=f"validation fraction (default {val_size})"
    )
    parser.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    parser.add_argument(
        "--image-size",
        type=int,
        help="resize so the shorter side is N (aspect kept, never upscaled); "
        "default: store the original encoded bytes",
    )
    parser.add_argument(
        "--png-compression",
        type=int,
        default=0,
        help="zlib level (0-9) for images medft re-encodes (resized, rotated, 16-bit...); "
        "0, the default, is fastest to write and to decode each epoch, 1-9 are smaller",
    )
    parser.add_argument(
        "--num-proc", type=int, help="processes reading images (default: all cores)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing prepared dataset"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also push to this Hub dataset")
    parser.add_argument("--private", action="store_true", help="make the pushed dataset private")


def add_test_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--test-size", type=float, default=0.15, help="test fraction (default 0.15)"
    )


def add_prepare_parser(subparsers: argparse._SubParsersAction) -> None:
    prepare = subparsers.add_parser(
        "prepare", help="convert a dataset on disk into a Hugging Face DatasetDict"
    )
    sources = prepare.add_subparsers(dest="source_type", required=True, metavar="SOURCE")

    brain = sources.add_parser("brain-tumor-44c", help="Kaggle Brain Tumor MRI Images 44 Classes")
    brain.add_argument("--source", required=True, type=Path, help="the unzipped download")
    brain.add_argument("--task", choices=("multiclass", "binary"), default="multiclass")
    add_common_prepare_options(brain, val_size=0.15)
    add_test_size(brain)

    nih = sources.add_parser("chestxray14", help="NIH ChestX-ray14 (Kaggle or NIH layout)")
    nih.add_argument("--source", required=True, type=Path, help="folder with images_001 ...")
    nih.add_argument("--views", choices=("PA", "AP"), help="keep only this view position")
    add_common_prepare_options(nih, val_size=0.1)

    folder = sources.add_parser(
        "folder", help="class-per-subfolder images, optionally in train/ val/ test/"
    )
    folder.add_argument("--source", required=True, type=Path)
    add_common_prepare_options(folder, val_size=0.15)
    add_test_size(folder)

    table = sources.add_parser("csv", help="a CSV of image paths and labels")
    table.add_argument("--csv", dest="csv_path", required=True, type=Path)
    table.add_argument("--image-root", type=Path, help="paths are relative to this (CSV's folder)")
    table.add_argument("--image-column", default="image")
    table.add_argument("--label-column", default="label")
    table.add_argument("--label-separator", help="multi-label: labels split on this, e.g. '|'")
    table.add_argument("--negative-label", help="multi-label value meaning none, e.g. 'No Finding'")
    table.add_argument("--split-column", help="column of train / val / test")
    table.add_argument("--group-column", help="keep each value (e.g. a patient) in one split")
    table.add_argument(
        "--metadata-columns", nargs="+", default=[], help="other columns to keep as text"
    )
    add_common_prepare_options(table, val_size=0.15)
    add_test_size(table)
    prepare.set_defaults(handler=run_prepare)


PREPARE_ONLY = (
    "output", "image_size", "png_compression", "num_proc", "overwrite", "push_to_hub", "private",
)  # fmt: skip


def run_prepare(args: argparse.Namespace) -> None:
    from medft.data.prepare import prepare_dataset
    from medft.data.report import format_summary

    options = {
        key: value
        for key, value in vars(args).items()
        if key not in (*PREPARE_ONLY, "command", "handler", "source_type")
    }
    report = prepare_dataset(
        args.source_type,
        args.output,
        image_size=args.image_size,
        png_compression=args.png_compression,
        num_proc=args.num_proc,
        overwrite=args.overwrite,
        **options,
    )
    print(format_summary(report, args.output))
    if args.push_to_hub:
        from medft.data.hub import push_dataset

        url = push_dataset(args.output, args.push_to_hub, private=args.private or None)
        print(f"pushed to {url}")


# synthesize ----------------------------------------------------------------------------------


def add_synthesize_parser(subparsers: argparse._SubParsersAction) -> None:
    synthesize = subparsers.add_parser(
        "synthesize", help="write a small fake dataset in a reference layout (for tests, demos)"
    )
    kinds = synthesize.add_subparsers(dest="kind", required=True, metavar="DATASET")
    brain = kinds.add_parser("brain-tumor-44c", help="44 class folders of fake MRI slices")
    brain.add_argument("output", type=Path)
    brain.add_argument("--per-class", type=int, default=12)
    brain.add_argument("--image-size", type=int, default=96)
    brain.add_argument("--seed", type=int, default=0)
    brain.add_argument(
        "--include-bad-files", action="store_true", help="add empty, truncated and non-image files"
    )
    nih = kinds.add_parser("chestxray14", help="NIH layout of fake radiographs")
    nih.add_argument("output", type=Path)
    nih.add_argument("--patients", dest="n_patients", type=int, default=40)
    nih.add_argument("--image-size", type=int, default=128)
    nih.add_argument("--seed", type=int, default=0)
    nih.add_argument("--num-proc", type=int, default=1)
    synthesize.set_defaults(handler=run_synthesize)


def run_synthesize(args: argparse.Namespace) -> None:
    from medft.data.synthetic import SYNTHESIZERS

    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler", "kind")}
    root = SYNTHESIZERS[args.kind](**options)
    n_files = sum(1 for path in root.rglob("*") if path.is_file())
    print(f"Wrote a synthetic {args.kind} dataset to {root} ({n_files} files).")


# train ---------------------------------------------------------------------------------------


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="fine-tune from a recipe in this process "
        "(for several processes: accelerate launch src/finetune.py RECIPE)",
        description="Fine-tune from a recipe. Any --key value after the recipe overrides it.",
        allow_abbrev=False,
    )
    train.add_argument("recipe", type=Path, help="a recipe YAML (see recipes/)")
    train.set_defaults(handler=run_train, takes_recipe_overrides=True)


def run_train(args: argparse.Namespace) -> None:
    from medft.config import parse_recipe
    from medft.reporting import format_run_summary
    from medft.training import train

    data_args, model_args, training_args = parse_recipe(args.recipe, args.overrides)
    test_metrics = train(data_args, model_args, training_args)
    if training_args.process_index == 0:
        print(format_run_summary(training_args.output_dir, test_metrics))


# show-augmentations ---------------------------------------------------------------------------


def add_show_augmentations_parser(subparsers: argparse._SubParsersAction) -> None:
    show = subparsers.add_parser(
        "show-augmentations",
        help="save a grid of augmented training images, as the model sees them",
        description="Any --key value after the recipe overrides it.",
        allow_abbrev=False,
    )
    show.add_argument("recipe", type=Path)
    show.add_argument("--output", type=Path, default=Path("augmentations.png"))
    show.add_argument("--images", type=int, default=5, help="training images, one per row")
    show.add_argument("--versions", type=int, default=6, help="augmented draws per image")
    show.set_defaults(handler=run_show_augmentations, takes_recipe_overrides=True)


def run_show_augmentations(args: argparse.Namespace) -> None:
    from medft.config import parse_recipe
    from medft.data.preview import augmentation_grid

    overrides = args.overrides
    if "--output_dir" not in overrides:
        overrides = [*overrides, "--output_dir", "unused"]  # a recipe key the grid does not use
    data_args, model_args, _ = parse_recipe(args.recipe, overrides)
    path = augmentation_grid(
        data_args, model_args, args.output, images=args.images, versions=args.versions
    )
    print(f"Wrote {path}")


# search ----------------------------------------------------------------------------------------


def add_search_parser(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search",
        help="hyper-parameter search over the recipe's search_space (Optuna, one process)",
        description="Trials run as one process, pruned by Optuna's median rule after each "
        "evaluation. Writes trials.csv and best_recipe.yaml to the recipe's output_dir. "
        "Any --key value after the recipe overrides it.",
        allow_abbrev=False,
    )
    search.add_argument("recipe", type=Path)
    search.add_argument("--n-trials", type=int, default=10)
    search.set_defaults(handler=run_search, takes_recipe_overrides=True)


def run_search(args: argparse.Namespace) -> None:
    try:
        from medft.search import format_trials, search
    except ModuleNotFoundError as error:
        if error.name != "optuna":
            raise
        raise MedftError("medft search needs Optuna: pip install 'medft[search]'.") from None

    result = search(args.recipe, args.overrides, args.n_trials)
    print(format_trials(result.trials, result.main_metric))
    print(f"\nBest: {result.best}")
    print(f"Trials: {result.table_path}\nBest recipe: {result.recipe_path}")
    print(f"Train it: medft train {result.recipe_path}")


# evaluate ------------------------------------------------------------------------------------


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="metrics with 95%% CIs, tuned thresholds, calibration and plots for a saved model",
        description="Score a split with a saved model, tune decision thresholds on the "
        "validation split, and write metrics.json, thresholds.json and PNG plots.",
    )
    evaluate.add_argument("--model", required=True, type=Path, help="a medft train output_dir")
    evaluate.add_argument("--dataset", required=True, help="a prepared dataset folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test)")
    evaluate.add_argument(
        "--tune-split",
        default="validation",
        help="split the thresholds are tuned on (default validation); without it, the model "
        "folder's thresholds.json, else 0.5",
    )
    evaluate.add_argument(
        "--output",
        type=Path,
        help="folder for the results (default: the model folder, where medft predict finds "
        "thresholds.json)",
    )
    evaluate.add_argument(
        "--threshold-method",
        default="auto",
        help="youden | f1 | auto (default: youden for binary, f1 per finding for multi-label)",
    )
    evaluate.add_argument(
        "--threshold", type=float, help="binary: use this probability threshold, not a tuned one"
    )
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0: none)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    evaluate.add_argument("--bins", type=int, default=15, help="calibration bins (default 15)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--num-workers", type=int, default=2, help="image-decoding processes")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> None:
    from medft.evaluation import EvaluationOptions, evaluate_model, format_evaluation

    options = EvaluationOptions(
        resamples=args.bootstrap,
        seed=args.seed,
        threshold_method=args.threshold_method,
        threshold=args.threshold,
        bins=args.bins,
        progress=True,
    )
    report, _ = evaluate_model(
        args.model,
        args.dataset,
        split=args.split,
        tuning_split=args.tune_split,
        output=args.output,
        options=options,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    print(format_evaluation(report, args.output or args.model))


# predict -------------------------------------------------------------------------------------


def add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="score images with a saved model into a CSV (batched, GPU when present)",
        description="INPUT: image files, folders (searched recursively), or prepared datasets "
        "(a folder with dataset_dict.json; --split picks the split). Unreadable files get a "
        "row with the reason.",
    )
    predict.add_argument("--model", required=True, type=Path, help="a medft train output_dir")
    predict.add_argument("inputs", nargs="+", metavar="INPUT")
    predict.add_argument("--output", type=Path, default=Path("predictions.csv"))
    predict.add_argument("--split", default="test", help="split of dataset inputs (default test)")
    predict.add_argument("--top-k", type=int, default=5, help="single-label: labels per row")
    predict.add_argument(
        "--thresholds",
        type=Path,
        help="thresholds.json to apply (default: the model folder's, from medft evaluate)",
    )
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32 (default) gives the scores pipeline() gives; bf16 / fp16 are faster where "
        "the hardware supports them (bf16: recent Xeon, A100/H100; fp16: GPUs)",
    )
    predict.add_argument("--num-workers", type=int, default=2, help="image-decoding processes")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    from medft.prediction import format_prediction_summary, predict

    summary = predict(
        args.model,
        args.inputs,
        args.output,
        split=args.split,
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        thresholds_path=args.thresholds,
        precision=args.precision,
    )
    print(format_prediction_summary(summary))


# explain -------------------------------------------------------------------------------------


def add_explain_parser(subparsers: argparse._SubParsersAction) -> None:
    explain = subparsers.add_parser(
        "explain",
        help="saliency maps (Grad-CAM) of a saved model's predictions, one PNG per image",
    )
    explain.add_argument("--model", required=True, type=Path, help="a medft train output_dir")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="files or folders")
    explain.add_argument("--output", required=True, type=Path, help="folder for the PNGs")
    explain.add_argument("--target", help="label to explain (default: the top prediction)")
    explain.add_argument("--top-k", type=int, default=5, help="scores shown per image")
    explain.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> None:
    from medft.explain import explain, format_explain_summary

    summary = explain(args.model, args.images, args.output, target=args.target, top_k=args.top_k)
    print(format_explain_summary(summary, args.output))


# demo ----------------------------------------------------------------------------------------


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="generate a brain-layout dataset, prepare it and fine-tune a small model",
        description="The whole job on generated data. Any --key value of a recipe "
        "overrides recipes/demo.yaml.",
        allow_abbrev=False,
    )
    demo.add_argument("--output", type=Path, default=Path("medft-demo"), help="working folder")
    demo.add_argument("--per-class", type=int, default=20, help="generated scans per class")
    demo.set_defaults(handler=run_demo, takes_recipe_overrides=True)


def run_demo(args: argparse.Namespace) -> None:
    from medft.demo import run_demo as demo
    from medft.reporting import format_run_summary

    test_metrics = demo(args.output, per_class=args.per_class, overrides=args.overrides)
    print(format_run_summary(args.output / "model", test_metrics))


# entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medft",
        allow_abbrev=False,
        description="Fine-tune image classifiers for medical imaging on the Hugging Face stack.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        add_prepare_parser,
        add_synthesize_parser,
        add_train_parser,
        add_show_augmentations_parser,
        add_search_parser,
        add_evaluate_parser,
        add_predict_parser,
        add_explain_parser,
        add_demo_parser,
    ):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if getattr(args, "takes_recipe_overrides", False):
        args.overrides = overrides
    elif overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    try:
        args.handler(args)
    except MedftError as error:
        print(f"medft: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medft: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
