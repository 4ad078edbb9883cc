"""The four extensions of the README's "Extending medft", each done here without editing
medft: a source layout for `medft prepare`, a task kind, a backbone family and a command.
Each is written as it would be in its own module and registered where medft looks for it;
monkeypatch (or the fixture that makes the task kind) takes it out again after the test."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Features, Value
from PIL import Image
from transformers import (
    CONFIG_MAPPING,
    IMAGE_PROCESSOR_MAPPING,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    ResNetConfig,
    ResNetForImageClassification,
    ViTImageProcessor,
)

from medft import cli
from medft.config import MedftTrainingArguments, ModelArguments
from medft.config.evaluation import EvaluationOptions
from medft.config.fields import positional
from medft.config.prepare import PrepareArguments
from medft.data.loading import load_training_data
from medft.errors import MedftError
from medft.evaluation.evaluate import EvaluationReport, SplitScores, evaluate_scores
from medft.formats.image_files import is_image_file, scan_images
from medft.modeling import build_model, families
from medft.modeling.backbones import build_processor
from medft.modeling.families import TRANSFORMERS, BackboneFamily, family_of, resolve_source
from medft.prepare import SOURCES, prepare_dataset
from medft.prepare.listing import Example, SourceListing
from medft.tasks import TASK_TYPES, BinaryTask, TaskInfo
from medft.training.build import resolve_best_metric
from tests.helpers import THREE, tiny_vit

# a source layout: a flat folder of SPLIT_CLASS_N.png files ---------------------------------
# (config/prepare.py: the options; prepare/named_files.py: the reader; prepare/__init__.py:
# SOURCES)


@dataclass(kw_only=True)
class NamedFilesOptions:
    """What `list_named_files` reads."""

    source: Path = field(metadata={"help": "a flat folder of SPLIT_CLASS_N.png images"})


@dataclass(kw_only=True)
class NamedFilesArguments(PrepareArguments, NamedFilesOptions):
    """Images named SPLIT_CLASS_N.png in one folder; the splits as named."""


def list_named_files(options: NamedFilesOptions) -> SourceListing:
    root = Path(options.source)
    ignored: Counter[str] = Counter()
    paths = scan_images(root, ignored)
    named = [path.stem.split("_") for path in paths]
    classes = sorted({class_name for _, class_name, _ in named})
    splits: dict[str, list[Example]] = {}
    for path, (split, class_name, _) in zip(paths, named):
        label = classes.index(class_name)
        example = Example(path, label, {"image_id": path.name}, given_split=split, stratum=label)
        splits.setdefault(split, []).append(example)
    return SourceListing(
        source_type="named-files",
        source=str(root.resolve()),
        label_names=classes,
        multi_label=False,
        splits=splits,
        metadata_features={"image_id": Value("string")},
        ignored=ignored,
    )


def named_files(folder: Path, classes: tuple[str, ...]) -> Path:
    """Three images per class in train, two in validation and test, and a stray text file."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, count in {"train": 3, "validation": 2, "test": 2}.items():
        for class_name in classes:
            for n in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{class_name}_{n}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_a_new_source_layout_is_prepared_and_loaded_back(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(SOURCES, "named-files", (NamedFilesArguments, list_named_files))
    source = named_files(tmp_path / "raw", ("cat", "dog"))
    output = tmp_path / "prepared"
    code = cli.main(["prepare", "named-files", "--source", str(source), "--output", str(output),
                     "--num-proc", "1"])  # fmt: skip
    assert code == 0
    assert f"Prepared named-files (binary, 2 classes) -> {output}" in capsys.readouterr().out
    dataset, task = load_training_data(str(output))
    assert {split: dataset[split].num_rows for split in dataset} == {
        "train": 6, "validation": 4, "test": 4
    }  # fmt: skip
    assert task == TaskInfo.prepared(["cat", "dog"], multi_label=False)
    assert sorted(dataset["test"]["image_id"])[0] == "test_cat_0.png"
    report = json.loads((output / "prepare_report.json").read_text())
    assert report["source_type"] == "named-files"
    assert report["ignored"] == {"not an image extension (.txt)": 1}
    assert str(source) not in (output / "prepare_report.json").read_text()  # a path: private


def test_the_library_front_door_takes_the_new_sources_options(monkeypatch, tmp_path):
    monkeypatch.setitem(SOURCES, "named-files", (NamedFilesArguments, list_named_files))
    source = named_files(tmp_path / "raw", ("a", "b", "c"))
    options = NamedFilesArguments(source=source, output=tmp_path / "out", num_proc=1)
    report = prepare_dataset(options)
    assert report["task"] == "multiclass"
    assert report["class_counts"]["train"] == {"a": 3, "b": 3, "c": 3}


# a task kind: screening, a binary task judged first by its sensitivity ---------------------
# (tasks/screening.py: the kind; tasks/__init__.py: its import, which registers it)


def screening_kind() -> type[TaskInfo]:
    class ScreeningTask(BinaryTask):
        """Normal or refer: who to refer, judged first by the sensitivity."""

        task = "screening"
        main_metric = "sensitivity"
        headline = ("sensitivity", "specificity", "auroc", "auprc")
        description = "screening (refer or not)"

        @classmethod
        def takes(cls, label_names, multi_label):
            return not multi_label and list(label_names) == ["normal", "refer"]

    return ScreeningTask


@pytest.fixture
def screening():
    """The screening kind, added to the task kinds (making its class adds it) for one test."""
    kinds = dict(TASK_TYPES)
    yield screening_kind()
    TASK_TYPES.clear()
    TASK_TYPES.update(kinds)


def test_the_new_kind_is_chosen_for_its_labels_and_read_back_from_every_record(screening, tmp_path):
    task = TaskInfo.prepared(["normal", "refer"], multi_label=False)
    assert type(task) is screening
    assert type(TaskInfo(["normal", "tumor"], multi_label=False)) is BinaryTask  # not its labels
    assert TaskInfo.from_name("screening", ["normal", "refer"]) == task  # metrics.json ...
    features = Features({"image": Value("string"), "label": task.label_feature()})
    assert TaskInfo.from_features(features, "image", "label") == task  # a prepared dataset
    config = PretrainedConfig()
    TRANSFORMERS.set_labels(config, task)  # as the model building sets them
    config.save_pretrained(tmp_path)
    assert TaskInfo.from_model_config(PretrainedConfig.from_pretrained(tmp_path)) == task


def test_the_new_kind_picks_the_best_epoch_and_heads_the_evaluation(screening):
    task = TaskInfo.prepared(["normal", "refer"], multi_label=False)
    args = resolve_best_metric(MedftTrainingArguments(output_dir="unused"), task)
    assert args.metric_for_best_model == "sensitivity"
    positive = np.array([0.1, 0.4, 0.6, 0.35, 0.7, 0.9])
    scores = SplitScores(np.stack([1 - positive, positive], 1), np.array([0, 0, 0, 1, 1, 1]))
    report = evaluate_scores(task, scores, split="test", options=EvaluationOptions(
        bootstrap_resamples=50))  # fmt: skip
    assert report.task == "screening"
    assert [name for name, _, _ in report.headline()] == list(screening.headline)
    assert report.metrics["sensitivity"] == pytest.approx(2 / 3)  # 0.7, 0.9 reach 0.5; 0.35 not
    assert type(EvaluationReport.from_json(report.to_json()).task_info) is screening


def test_a_new_sources_dataset_is_of_the_new_kind(screening, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(SOURCES, "named-files", (NamedFilesArguments, list_named_files))
    source = named_files(tmp_path / "raw", ("normal", "refer"))
    output = tmp_path / "prepared"
    assert cli.main(["prepare", "named-files", "--source", str(source), "--output", str(output),
                     "--num-proc", "1"]) == 0  # fmt: skip
    assert "Prepared named-files (screening, 2 classes)" in capsys.readouterr().out
    assert type(load_training_data(str(output))[1]) is screening


# a backbone family: `toy/resnet`, transformers' ResNet under a config of its own -----------
# (modeling/families/toy.py: the family, and its classes registered with transformers' Auto
# classes; modeling/families/__init__.py: FAMILIES)

TOY_PREFIX = "toy/"
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
               "layer_type": "basic"}  # fmt: skip


class ToyConfig(ResNetConfig):
    model_type = "medft-toy"


class ToyModel(ResNetForImageClassification):
    config_class = ToyConfig


class ToyProcessor(ViTImageProcessor):
    """A resize to the input size and ImageNet's mean and std."""


def register_toy_with_transformers() -> None:
    """What the family's module does on import, so that a saved toy model loads back through
    transformers' Auto classes (as `medft predict` loads any)."""
    AutoConfig.register(ToyConfig.model_type, ToyConfig)
    AutoModelForImageClassification.register(ToyConfig, ToyModel)
    AutoImageProcessor.register(ToyConfig, image_processor_classes={"torchvision": ToyProcessor})


class ToyFamily(BackboneFamily):
    """Tiny ResNets named `toy/resnet`, built here. Their modules and processor are
    transformers', so the family reads them as transformers' family does."""

    card_tags = ("toy",)

    def claims(self, name):
        return name.startswith(TOY_PREFIX)

    def new_config(self, args):
        return ToyConfig(**TINY_RESNET, **(args.config_overrides or {}))

    def hub_weights(self, name):
        raise MedftError(f"{name}: toy models have no pretrained weights; set pretrained: false.")

    def owns(self, made):
        return isinstance(getattr(made, "config", made), ToyConfig) or isinstance(
            made, ToyProcessor
        )

    def configure(self, args, source):
        return source.config

    def build(self, args, config, weights):
        return ToyModel(config) if weights is None else ToyModel.from_pretrained(weights)

    def processor(self, args, config, weights):
        side = args.image_size or 32
        return ToyProcessor(size={"height": side, "width": side})

    def input_spec(self, processor):
        return TRANSFORMERS.input_spec(processor)

    def preprocessing_settings(self, processor):
        return TRANSFORMERS.preprocessing_settings(processor)

    def processing_class(self, processor):
        return processor

    def block_layout(self, model):
        return TRANSFORMERS.block_layout(model)

    def classifier_name(self, model):
        return TRANSFORMERS.classifier_name(model)

    def check_explainable(self, model):
        return None


TOY = ToyFamily()


@pytest.fixture
def toy_family(monkeypatch):
    """The toy family first among the families, and its classes in transformers' Auto
    mappings, for one test."""
    monkeypatch.setattr(families, "FAMILIES", [TOY, *families.FAMILIES])
    for mapping in CONFIG_MAPPING, MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING, IMAGE_PROCESSOR_MAPPING:
        monkeypatch.setattr(mapping, "_extra_content", dict(mapping._extra_content))
    register_toy_with_transformers()
    return TOY


def test_the_new_familys_names_resolve_to_it_and_others_are_unchanged(toy_family):
    source = resolve_source(ModelArguments("toy/resnet", pretrained=False))
    assert source.family is TOY and source.weights is None
    assert isinstance(source.config, ToyConfig)
    with pytest.raises(MedftError, match="toy models have no pretrained weights"):
        resolve_source(ModelArguments("toy/resnet"))
    assert resolve_source(tiny_vit()).family is TRANSFORMERS
    assert family_of(ResNetConfig()) is TRANSFORMERS


def test_a_model_of_the_new_family_is_built_frozen_and_fed_by_its_processor(toy_family):
    args = ModelArguments("toy/resnet", pretrained=False, freeze="backbone", image_size=40)
    built = build_model(args, THREE)
    assert built.family is TOY
    assert family_of(built.model) is TOY and family_of(built.processor) is TOY
    assert built.model.config.id2label == THREE.id2label
    assert [name for name, _ in built.layout.blocks] == ["encoder.stages.0", "encoder.stages.1"]
    trainable = [name for name, p in built.model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("classifier.") for name in trainable)
    assert TOY.input_spec(build_processor(args)).size == (40, 40)
    logits = built.model(pixel_values=torch.zeros(2, 3, 40, 40)).logits
    assert logits.shape == (2, 3)


def test_a_saved_model_of_the_new_family_loads_back_and_predicts(toy_family, tmp_path):
    built = build_model(ModelArguments("toy/resnet", pretrained=False), THREE)
    model_folder = tmp_path / "model"
    built.model.save_pretrained(model_folder)
    built.processor.save_pretrained(model_folder)
    images = named_files(tmp_path / "images", ("a", "b"))
    predictions = tmp_path / "predictions.csv"
    assert cli.main(["predict", "--model", str(model_folder), str(images),
                     "--output", str(predictions)]) == 0  # fmt: skip
    with predictions.open() as table:
        rows = list(csv.DictReader(table))
    assert len(rows) == 14 and not any(row["error"] for row in rows)
    assert {row["label_1"] for row in rows} <= set(THREE.label_names)
    again = build_model(ModelArguments(str(model_folder)), THREE)  # to fine-tune further
    assert again.family is TOY
    assert torch.equal(again.model.classifier[1].weight, built.model.classifier[1].weight)


# a command: medft count-images -------------------------------------------------------------
# (config/commands.py: the options; commands/count_images.py: the work; cli.py: the handler
# and its line in COMMANDS)


@dataclass(kw_only=True)
class CountImagesArguments:
    """medft count-images: the images under a folder, by extension."""

    folder: Path = field(metadata=positional("a folder of images"))
    extensions: bool = field(default=True, metadata={"help": "count each extension apart"})

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise MedftError(f"{self.folder} is not a folder; give a folder of images.")


def run_count_images(options: CountImagesArguments) -> None:
    images = [path for path in options.folder.rglob("*") if is_image_file(path)]
    print(f"{len(images)} images")
    if options.extensions:
        for extension, count in sorted(Counter(path.suffix for path in images).items()):
            print(f"{extension}: {count}")


@pytest.fixture
def count_images(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "count-images", (CountImagesArguments, run_count_images))


def test_the_new_command_is_listed_and_documented(count_images, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    assert "count-images" in listed and "the images under a folder, by extension" in listed
    with pytest.raises(SystemExit):
        cli.main(["count-images", "--help"])
    assert "count each extension apart (default: True)" in capsys.readouterr().out


def test_the_new_command_runs_and_its_errors_are_one_line(count_images, tmp_path, capsys):
    named_files(tmp_path / "raw", ("a", "b"))
    assert cli.main(["count-images", str(tmp_path / "raw")]) == 0
    assert capsys.readouterr().out.splitlines() == ["14 images", ".png: 14"]
    assert cli.main(["count-images", str(tmp_path / "raw"), "--extensions", "false"]) == 0
    assert capsys.readouterr().out.splitlines() == ["14 images"]
    assert cli.main(["count-images", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"medft: error: {tmp_path / 'none'} is not a folder; give a folder of images."
    ]
