"""The `medft` command: one subcommand per stage, each a thin call into the library.

Every command is an options dataclass of `medft.config` (the help text and default of each
option live there once) and a handler that takes it: this module turns the dataclass into
argparse options, builds it from the parsed arguments, and calls the handler, which calls
the library with it. Heavy imports (torch, transformers) happen inside the handlers, so
`medft --help` answers at once. A `MedftError` is printed as one line and exits with
status 2.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import importlib.util
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medft.config import commands, evaluation, inference
from medft.config.prepare import PrepareArguments
from medft.errors import MedftError
from medft.formats.pixel_budget import max_megapixels
from medft.progress import quiet_library_bars


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


def add_options(parser: argparse.ArgumentParser, options: type) -> None:
    """The fields of an options dataclass as arguments, the way `HfArgumentParser` adds them
    (``--field_name`` / ``--field-name``, bools taking an optional true / false); fields with
    ``positional`` metadata become positional arguments, and ``internal`` ones none."""
    from transformers import HfArgumentParser

    hints = typing.get_type_hints(options)
    for item in dataclasses.fields(options):
        metadata = dict(item.metadata)
        if not item.init or metadata.pop("internal", False):
            continue
        metadata.pop("refused", None)
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
    """The options dataclass from parsed arguments (its checks raise `MedftError`s); an option
    with ``refused`` metadata (a secret, which would show in `ps`) stops with that message."""
    fields = [f for f in dataclasses.fields(options) if f.init and hasattr(args, f.name)]
    for item in fields:
        if "refused" in item.metadata and getattr(args, item.name) is not None:
            raise MedftError(item.metadata["refused"])
    return options(**{f.name: getattr(args, f.name) for f in fields})


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    options: type,
    handler: Callable[[Any], None],
) -> None:
    """The command ``name``: its options the fields of ``options``, its description their
    docstring, and ``handler`` called with them."""
    about = " ".join((options.__doc__ or "").split())
    overrides = " Any --key value after the recipe overrides it."
    parser = subparsers.add_parser(
        name,
        help=about.split(": ", 1)[-1].rstrip(".").replace("%", "%%"),
        description=about + (overrides if issubclass(options, commands.RecipeOverrides) else ""),
        formatter_class=DefaultsShown,
        allow_abbrev=False,
    )
    add_options(parser, options)
    parser.set_defaults(handler=handler, options=options)


def require(extra: str, **modules: str) -> None:
    """`medft EXTRA` needs these modules (import name: the name shown), which
    ``pip install 'medft[EXTRA]'`` brings; a missing one is a one-line error saying so."""
    for module, shown in modules.items():
        if importlib.util.find_spec(module) is None:
            raise MedftError(f"medft {extra} needs {shown}: pip install 'medft[{extra}]'.")


# each command's handler: its options in, the library called with them, a summary printed ------


def run_prepare(options: PrepareArguments) -> None:
    from medft.prepare import prepare_dataset
    from medft.prepare.report import format_summary

    report = prepare_dataset(options)
    print(format_summary(report, options.output))
    if options.push_to_hub:
        from medft.prepare.hub import push_dataset

        url = push_dataset(options.output, options.push_to_hub, private=options.private or None)
        print(f"pushed to {url}")


def run_synthesize(layout: str, options: Any) -> None:
    from medft.prepare.synthetic import SYNTHESIZERS

    _, write = SYNTHESIZERS[layout]
    root = write(**dataclasses.asdict(options))
    n_files = sum(1 for path in root.rglob("*") if path.is_file())
    print(f"Wrote a synthetic {layout} dataset to {root} ({n_files} files).")


def run_train(options: commands.TrainArguments) -> None:
    from medft.evaluation.reporting import format_run_summary
    from medft.parsing import parse_recipe
    from medft.training.run import train

    recipe = parse_recipe(options.recipe, options.overrides)
    result = train(*recipe)
    if recipe.training.process_index == 0:
        print(
            format_run_summary(recipe.training.output_dir, result.evaluation, result.test_metrics)
        )


def run_probe(options: commands.ProbeArguments) -> None:
    probing = [*options.overrides, "--training_mode", "linear_probe"]  # whatever the recipe says
    run_train(dataclasses.replace(options, overrides=probing))


def run_show_augmentations(options: commands.ShowAugmentationsArguments) -> None:
    from medft.commands.preview import augmentation_grid
    from medft.parsing import parse_recipe

    overrides = options.overrides
    if "--output_dir" not in overrides:
        overrides = [*overrides, "--output_dir", "unused"]  # a recipe key the grid does not use
    recipe = parse_recipe(options.recipe, overrides)
    path = augmentation_grid(
        recipe.data, recipe.model, options.output, images=options.images, versions=options.versions
    )
    print(f"Wrote {path}")


def run_search(options: commands.SearchArguments) -> None:
    require("search", optuna="Optuna")
    from medft.commands.search import format_trials, search

    result = search(options)
    if result is None:  # a process other than the main one
        return
    print(format_trials(result.trials, result.main_metric))
    print(f"\nBest: {result.best}")
    print(f"Trials: {result.table_path}\nBest recipe: {result.recipe_path}")
    print(f"Train it: medft train {result.recipe_path}")


def run_cv(options: commands.CvArguments) -> None:
    from medft.commands.cv import cross_validate, format_cv

    result = cross_validate(options)
    if result is not None:  # None in the processes other than the main one
        print(format_cv(result))


def run_audit(options: commands.AuditArguments) -> None:
    from medft.commands.audit import audit_datasets, format_result, write_audit

    result = audit_datasets(options)
    print(format_result(result, write_audit(result, options.output)))


def run_evaluate(options: evaluation.EvaluateArguments) -> None:
    from medft.evaluation.reporting import format_evaluation, write_evaluation
    from medft.evaluation.saved_models import evaluate_model

    options.progress = True
    report, scores = evaluate_model(options)
    output = options.output or options.model[0]
    write_evaluation(report, report.task_info, scores, output)
    print(format_evaluation(report, output))


def run_calibrate(options: evaluation.CalibrateArguments) -> None:
    from medft.commands.calibrate import calibrate_model
    from medft.evaluation.reporting import format_evaluation

    options.progress = True
    report, output, fit = calibrate_model(options)
    print(format_evaluation(report, output))
    print(f"\n{fit.summary()}")


def run_predict(options: inference.PredictArguments) -> None:
    from medft.commands.predict import format_prediction_summary, predict

    print(format_prediction_summary(predict(options)))


def run_explain(options: inference.ExplainArguments) -> None:
    from medft.commands.explain import explain, format_explain_summary

    print(format_explain_summary(explain(options), options.output))


def run_serve(options: inference.ServeArguments) -> None:
    require("serve", gradio="Gradio")
    from medft.private_folder import private_temp_folder

    # Gradio's uploads and pictures go to a folder of this server's own, named before Gradio
    # is imported (some of its modules read GRADIO_TEMP_DIR once, at import)
    with private_temp_folder("GRADIO_TEMP_DIR", "medft-serve-"):
        from medft.commands.serve import serve
        from medft.commands.space import write_space

        if options.write_space:
            written = write_space(options.model, options.write_space, options.max_upload_mb)
            print(f"Wrote {', '.join(path.name for path in written)} to {options.write_space}")
            print(
                "Push them to a Gradio Space, e.g. huggingface-cli upload --repo-type space "
                f"USER/SPACE {options.write_space}"
            )
            return
        serve(options)


def run_export(options: inference.ExportArguments) -> None:
    require("export", onnx="onnx", onnxruntime="onnxruntime")
    from medft.commands.export import export_onnx, format_export_summary

    print(format_export_summary(export_onnx(options)))


def run_demo(options: commands.DemoArguments) -> None:
    from medft.commands.demo import run_demo as demo
    from medft.evaluation.reporting import format_run_summary

    result = demo(options)
    print(format_run_summary(options.output / "model", result.evaluation, result.test_metrics))


# entry point ---------------------------------------------------------------------------------


# every command but prepare and synthesize (one per source, layout): options, handler
COMMANDS: dict[str, tuple[type, Callable[[Any], None]]] = {
    "train": (commands.TrainArguments, run_train),
    "probe": (commands.ProbeArguments, run_probe),
    "show-augmentations": (commands.ShowAugmentationsArguments, run_show_augmentations),
    "search": (commands.SearchArguments, run_search),
    "cv": (commands.CvArguments, run_cv),
    "audit": (commands.AuditArguments, run_audit),
    "evaluate": (evaluation.EvaluateArguments, run_evaluate),
    "calibrate": (evaluation.CalibrateArguments, run_calibrate),
    "predict": (inference.PredictArguments, run_predict),
    "explain": (inference.ExplainArguments, run_explain),
    "serve": (inference.ServeArguments, run_serve),
    "export": (inference.ExportArguments, run_export),
    "demo": (commands.DemoArguments, run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    from medft.prepare import SOURCES
    from medft.prepare.synthetic import SYNTHESIZERS

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
    for name, (options, _) in SOURCES.items():
        add_command(sources, name, options, run_prepare)

    synthesize = subparsers.add_parser(
        "synthesize", help="write a small fake dataset in a reference layout (for tests, demos)"
    )
    layouts = synthesize.add_subparsers(dest="kind", required=True, metavar="DATASET")
    for name, (options, _) in SYNTHESIZERS.items():
        add_command(layouts, name, options, functools.partial(run_synthesize, name))

    for name, (options, handler) in COMMANDS.items():
        add_command(subparsers, name, options, handler)
    return parser


def leave_process_group(finished: bool) -> None:
    """A process launched by `accelerate launch` (or torchrun) leaves its process group before
    it exits: left to the interpreter's shutdown, gloo's worker threads abort it now and then
    (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#190489). After
    a finished command every process waits for the others, so none returns before the main
    one has written the model."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    from accelerate import PartialState

    if finished:
        PartialState().wait_for_everyone()
    PartialState().destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    if issubclass(args.options, commands.RecipeOverrides):
        args.overrides = overrides
    elif overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    finished = False
    try:
        max_megapixels()  # a bad MEDFT_MAX_MEGAPIXELS stops any command here, not file by file
        quiet_library_bars()
        args.handler(options_from(args, args.options))
        finished = True
    except MedftError as error:
        print(f"medft: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medft: interrupted", file=sys.stderr)
        return 130
    finally:
        leave_process_group(finished)
    return 0


if __name__ == "__main__":
    sys.exit(main())
