"""The `medft` command: one subcommand per stage, each a thin call into the library.

Every command's options are a dataclass of `medft.config.commands` (the help text
and default of each live there once); this module only turns them into argparse
options and calls the library. Heavy imports (torch, transformers) happen inside
the handlers, so `medft --help` answers at once. A `MedftError` is printed as one
line and exits with status 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medft.errors import MedftError
from medft.pixel_budget import max_megapixels


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def add_options(parser: argparse.ArgumentParser, options: type) -> None:
    """The fields of an options dataclass as arguments, the way `HfArgumentParser` adds them
    (``--field_name`` / ``--field-name``, bools taking an optional true / false); fields with
    ``positional`` metadata become positional arguments."""
    from transformers import HfArgumentParser

    hints = typing.get_type_hints(options)
    for item in dataclasses.fields(options):
        metadata = dict(item.metadata)
        if not item.init or metadata.pop("internal", False):
            continue
        metadata["help"] = metadata.get("help", "").replace("%", "%%")  # argparse formats help
        if metadata.pop("repeatable", False):  # --model A --model B
            parser.add_argument(f"--{item.name}", action="append", type=Path, required=True,
                                **metadata)  # fmt: skip
            continue
        if metadata.pop("positional", False):
            kind = Path if Path in (hints[item.name], *typing.get_args(hints[item.name])) else str
            parser.add_argument(item.name, type=kind, **metadata)
            continue
        resolved = copy.copy(item)
        resolved.type = hints[item.name]
        resolved.metadata = metadata
        HfArgumentParser._parse_dataclass_field(parser, resolved)


def options_from(args: argparse.Namespace, options: type) -> Any:
    """The options dataclass from parsed arguments (its checks raise `MedftError`s)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(options)
              if f.init and hasattr(args, f.name)}  # fmt: skip
    return options(**values)


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    options: type,
    handler: Callable[..., None],
    *,
    takes_recipe_overrides: bool = False,
    **settings: Any,
) -> argparse.ArgumentParser:
    description = " ".join((options.__doc__ or "").split())
    parser = subparsers.add_parser(
        name,
        help=description.split(": ", 1)[-1].rstrip(".").replace("%", "%%"),
        description=description
        + (" Any --key value after the recipe overrides it." if takes_recipe_overrides else ""),
        formatter_class=DefaultsShown,
        allow_abbrev=False,
        **settings,
    )
    add_options(parser, options)
    parser.set_defaults(
        handler=handler, options=options, takes_recipe_overrides=takes_recipe_overrides
    )
    return parser


# prepare and synthesize -----------------------------------------------------------------------


def run_prepare(args: argparse.Namespace, options: Any) -> None:
    from medft.prepare import prepare_dataset
    from medft.prepare.report import format_summary

    values = dataclasses.asdict(options)
    writer = {key: values.pop(key) for key in options.WRITER_KEYS}
    hub = {key: values.pop(key) for key in options.HUB_KEYS}
    report = prepare_dataset(args.source_type, **writer, **values)
    print(format_summary(report, options.output))
    if hub["push_to_hub"]:
        from medft.prepare.hub import push_dataset

        url = push_dataset(options.output, hub["push_to_hub"], private=hub["private"] or None)
        print(f"pushed to {url}")


def run_synthesize(args: argparse.Namespace, options: Any) -> None:
    from medft.prepare.synthetic import SYNTHESIZERS

    root = SYNTHESIZERS[args.kind](**dataclasses.asdict(options))
    n_files = sum(1 for path in root.rglob("*") if path.is_file())
    print(f"Wrote a synthetic {args.kind} dataset to {root} ({n_files} files).")


# training -------------------------------------------------------------------------------------


def run_train(args: argparse.Namespace, options: Any) -> None:
    from medft.parsing import parse_recipe
    from medft.reporting import format_run_summary
    from medft.training import train

    recipe = parse_recipe(options.recipe, args.overrides)
    result = train(*recipe)
    if recipe.training.process_index == 0:
        print(
            format_run_summary(recipe.training.output_dir, result.evaluation, result.test_metrics)
        )


def run_show_augmentations(args: argparse.Namespace, options: Any) -> None:
    from medft.parsing import parse_recipe
    from medft.preview import augmentation_grid

    overrides = args.overrides
    if "--output_dir" not in overrides:
        overrides = [*overrides, "--output_dir", "unused"]  # a recipe key the grid does not use
    recipe = parse_recipe(options.recipe, overrides)
    path = augmentation_grid(
        recipe.data, recipe.model, options.output, images=options.images, versions=options.versions
    )
    print(f"Wrote {path}")


def run_search(args: argparse.Namespace, options: Any) -> None:
    try:
        from medft.search import format_trials, search
    except ModuleNotFoundError as error:
        if error.name != "optuna":
            raise
        raise MedftError("medft search needs Optuna: pip install 'medft[search]'.") from None

    result = search(options.recipe, args.overrides, options.n_trials)
    print(format_trials(result.trials, result.main_metric))
    print(f"\nBest: {result.best}")
    print(f"Trials: {result.table_path}\nBest recipe: {result.recipe_path}")
    print(f"Train it: medft train {result.recipe_path}")


def run_demo(args: argparse.Namespace, options: Any) -> None:
    from medft.demo import run_demo as demo
    from medft.reporting import format_run_summary

    result = demo(options.output, per_class=options.per_class, overrides=args.overrides)
    print(format_run_summary(options.output / "model", result.evaluation, result.test_metrics))


# using a saved model --------------------------------------------------------------------------


def run_evaluate(args: argparse.Namespace, options: Any) -> None:
    from medft.evaluation import evaluate_model
    from medft.reporting import format_evaluation, write_evaluation

    options.progress = True
    report, scores = evaluate_model(
        options.model,
        options.dataset,
        split=options.split,
        tuning_split=options.tune_split,
        options=options,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        tta=options.tta,
        subgroups=options.subgroups,
    )
    output = options.output or options.model[0]
    write_evaluation(report, report.task_info, scores, output)
    print(format_evaluation(report, output))


def run_cv(args: argparse.Namespace, options: Any) -> None:
    from medft.cv import cross_validate, format_cv

    result = cross_validate(
        options.recipe, args.overrides, options.folds, options.output, options.overwrite
    )
    print(format_cv(result))


def run_audit(args: argparse.Namespace, options: Any) -> None:
    from medft.audit import audit_datasets, format_result, write_audit
    from medft.near_duplicates import parse_threshold

    threshold = parse_threshold(options.near_duplicates)
    if threshold is None:
        raise MedftError("medft audit needs a threshold: --near-duplicates 0-16, not off.")
    result = audit_datasets(
        options.dataset, against=options.against, threshold=threshold, num_proc=options.num_proc
    )
    print(format_result(result, write_audit(result, options.output)))


def run_calibrate(args: argparse.Namespace, options: Any) -> None:
    from medft.calibrate import calibrate_model
    from medft.reporting import format_evaluation

    options.progress = True
    report, output = calibrate_model(options)
    print(format_evaluation(report, output))


def run_predict(args: argparse.Namespace, options: Any) -> None:
    from medft.prediction import format_prediction_summary, predict

    print(format_prediction_summary(predict(**dataclasses.asdict(options))))


def run_explain(args: argparse.Namespace, options: Any) -> None:
    from medft.explain import explain, format_explain_summary

    summary = explain(**dataclasses.asdict(options))
    print(format_explain_summary(summary, options.output))


def run_serve(args: argparse.Namespace, options: Any) -> None:
    from medft.private_folder import private_temp_folder

    # Gradio's uploads and pictures go to a folder of this server's own, named before Gradio
    # is imported (some of its modules read GRADIO_TEMP_DIR once, at import)
    with private_temp_folder("GRADIO_TEMP_DIR", "medft-serve-"):
        try:
            from medft.serve import serve, write_space
        except ModuleNotFoundError as error:
            if error.name != "gradio":
                raise
            raise MedftError("medft serve needs Gradio: pip install 'medft[serve]'.") from None

        if options.write_space:
            written = write_space(options.model, options.write_space, options.max_upload_mb)
            print(f"Wrote {', '.join(path.name for path in written)} to {options.write_space}")
            print(
                "Push them to a Gradio Space, e.g. huggingface-cli upload --repo-type space "
                f"USER/SPACE {options.write_space}"
            )
            return
        serve(
            options.model, port=options.port, share=options.share,
            max_upload_mb=options.max_upload_mb, max_files=options.max_files,
            max_queue=options.max_queue,
        )  # fmt: skip


def run_export(args: argparse.Namespace, options: Any) -> None:
    try:
        from medft.export import export_onnx, format_export_summary
    except ModuleNotFoundError as error:
        if error.name not in ("onnx", "onnxruntime"):
            raise
        raise MedftError(f"medft export needs {error.name}: pip install 'medft[export]'.") from None

    summary = export_onnx(
        options.model,
        options.output,
        quantize_mode=options.quantize,
        dataset=options.dataset,
        split=options.split,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
    )
    print(format_export_summary(summary))


# entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from medft.config import commands

    parser = argparse.ArgumentParser(
        prog="medft",
        allow_abbrev=False,
        description="Fine-tune image classifiers for medical imaging on the Hugging Face stack.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = subparsers.add_parser(
        "prepare", help="convert a dataset on disk into a Hugging Face DatasetDict"
    )
    sources = prepare.add_subparsers(dest="source_type", required=True, metavar="SOURCE")
    for name, options in commands.PREPARE_SOURCES.items():
        add_command(sources, name, options, run_prepare)

    synthesize = subparsers.add_parser(
        "synthesize", help="write a small fake dataset in a reference layout (for tests, demos)"
    )
    kinds = synthesize.add_subparsers(dest="kind", required=True, metavar="DATASET")
    for name, options in commands.SYNTHESIZED.items():
        add_command(kinds, name, options, run_synthesize)

    add_command(subparsers, "train", commands.TrainArguments, run_train,
                takes_recipe_overrides=True)  # fmt: skip
    add_command(subparsers, "show-augmentations", commands.ShowAugmentationsArguments,
                run_show_augmentations, takes_recipe_overrides=True)  # fmt: skip
    add_command(subparsers, "search", commands.SearchArguments, run_search,
                takes_recipe_overrides=True)  # fmt: skip
    add_command(subparsers, "cv", commands.CvArguments, run_cv, takes_recipe_overrides=True)
    add_command(subparsers, "audit", commands.AuditArguments, run_audit)
    add_command(subparsers, "evaluate", commands.EvaluateArguments, run_evaluate)
    add_command(subparsers, "calibrate", commands.CalibrateArguments, run_calibrate)
    add_command(subparsers, "predict", commands.PredictArguments, run_predict)
    add_command(subparsers, "explain", commands.ExplainArguments, run_explain)
    add_command(subparsers, "serve", commands.ServeArguments, run_serve)
    add_command(subparsers, "export", commands.ExportArguments, run_export)
    add_command(subparsers, "demo", commands.DemoArguments, run_demo,
                takes_recipe_overrides=True)  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.takes_recipe_overrides:
        args.overrides = overrides
    elif overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    try:
        max_megapixels()  # a bad MEDFT_MAX_MEGAPIXELS stops any command here, not file by file
        args.handler(args, options_from(args, args.options))
    except MedftError as error:
        print(f"medft: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medft: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
