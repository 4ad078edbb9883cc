"""`medft demo`: the whole job on generated data, on the CPU, in a few minutes.

Synthesizes a small dataset in the Brain Tumor MRI 44c layout (with three
broken files, to show they are reported), prepares it, and fine-tunes
`recipes/demo.yaml` on it, then prints the test metrics and how to use the model.
"""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

from medft.config.commands import DemoArguments
from medft.config.prepare import BrainTumorArguments
from medft.parsing import parse_recipe
from medft.prepare import prepare_dataset
from medft.prepare.synthetic import synthesize_brain_tumor_44c
from medft.training.run import TrainingResult, train

IMAGE_SIZE = 72  # pixels of the generated scans


def run_demo(options: DemoArguments) -> TrainingResult:
    """Generate, prepare, train and evaluate."""
    output, per_class = Path(options.output), options.per_class
    raw, dataset, model = output / "raw", output / "dataset", output / "model"
    for folder in (raw, model):  # a fresh run each time, never a resume of an old one
        shutil.rmtree(folder, ignore_errors=True)

    print(f"1/3 Writing {per_class} generated scans per class to {raw} ...")
    synthesize_brain_tumor_44c(
        raw, per_class=per_class, image_size=IMAGE_SIZE, include_bad_files=True
    )

    print(f"2/3 Preparing {dataset} ...")
    report = prepare_dataset(BrainTumorArguments(output=dataset, source=raw, overwrite=True))
    counts = ", ".join(f"{split} {n}" for split, n in report["counts"].items())
    print(
        f"    {sum(report['counts'].values())} images in 44 classes ({counts}); "
        f"{report['skipped_count']} unreadable files skipped and listed in "
        f"{dataset / 'prepare_report.json'}"
    )

    print(f"3/3 Fine-tuning recipes/demo.yaml into {model} ...")
    recipe = importlib.resources.files("medft.recipes") / "demo.yaml"
    with importlib.resources.as_file(recipe) as recipe_path:
        arguments = parse_recipe(
            recipe_path,
            ["--dataset_name", str(dataset), "--output_dir", str(model), *options.overrides],
        )
    return train(*arguments)
