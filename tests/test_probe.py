"""The linear probe on cached features: the cache (written once, keyed by model and split,
never used for another), the probe's head (it learns, it is the saved model's head), LP-FT,
the search over probes, and the settings refused."""

import csv
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image
from safetensors.numpy import load_file
from torch import nn
from transformers import AutoModelForImageClassification, pipeline, set_seed

from medft.cli import main
from medft.config import DataArguments, MedftTrainingArguments
from medft.data.pipeline import load_data
from medft.errors import MedftError
from medft.modeling import build_model
from medft.modeling.lora import merged
from medft.parsing import parse_recipe
from medft.training import features as features_module
from medft.training.features import CACHE_FOLDER
from medft.training.probe import LinearProbe, check_probe_head, probe_head
from medft.training.trainer import MedftTrainer
from tests.helpers import FIXTURES, saved_splits, tiny_timm

DARK_BRIGHT = ClassLabel(names=["dark", "bright"])


def shades(count: int, seed: int) -> Dataset:
    """Grey scans with noise, dark (label 0) or bright (label 1) in turn: linearly separable
    by any backbone's pooled features."""
    rng = np.random.default_rng(seed)
    labels = [row % 2 for row in range(count)]
    images = [
        Image.fromarray(np.clip(rng.normal(50 + 150 * label, 15, (36, 36)), 0, 255).astype("uint8"))
        for label in labels
    ]
    features = Features({"image": ImageFeature(), "label": DARK_BRIGHT})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def separable(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("separable") / "shades"
    splits = {"train": shades(48, 0), "validation": shades(16, 1), "test": shades(16, 2)}
    return Path(saved_splits(splits, folder))


def probe_arguments(dataset: Path, cache: Path, *overrides: str):
    return parse_recipe(
        FIXTURES / "tiny_timm.yaml",
        [
            "--dataset_name",
            str(dataset),
            "--output_dir",
            str(cache.parent / "unused"),
            "--training_mode",
            "linear_probe",
            "--feature_cache_dir",
            str(cache),
            *overrides,
        ],
    )


def fitted_probe(dataset: Path, cache: Path, *overrides: str, model_args=None) -> LinearProbe:
    """A probe fitted as `medft train` fits it when it builds the model."""
    data_args, recipe_model, args = probe_arguments(dataset, cache, *overrides)
    model_args = model_args or recipe_model
    set_seed(args.seed)
    data = load_data(data_args, args)
    probe = LinearProbe(data, data_args, model_args, args)
    build_model(model_args, data.task, start_head=probe.start_head)
    return probe


@pytest.fixture
def embeddings(monkeypatch) -> list[int]:
    """The number of images of each split the backbone embeds."""
    calls = []
    real = features_module.split_features

    def counted(classifier, split, *args, **kwargs):
        calls.append(len(split))
        return real(classifier, split, *args, **kwargs)

    monkeypatch.setattr(features_module, "split_features", counted)
    return calls


def test_features_are_embedded_once_and_read_back_for_another_head(
    separable, tmp_path, embeddings, caplog
):
    cache = tmp_path / "cache"
    first = fitted_probe(separable, cache)
    assert embeddings == [48, 16] and first.embedded_images == 64
    assert len(list(cache.glob("*.safetensors"))) == 2
    with caplog.at_level(logging.INFO, logger="medft"):
        again = fitted_probe(separable, cache, "--learning_rate", "0.01", "--weight_decay", "0.1")
    assert embeddings == [48, 16] and again.embedded_images == 0  # nothing embedded again
    assert "features from cache" in caplog.text
    assert again.metrics["probe_embedded_images"] == 0 and again.metrics["probe_head_seconds"] > 0


def test_another_model_or_other_rows_are_embedded_anew(separable, tmp_path, embeddings):
    cache = tmp_path / "cache"
    fitted_probe(separable, cache)
    fitted_probe(separable, cache, "--seed", "7")  # other random backbone weights
    assert embeddings == [48, 16, 48, 16]
    fitted_probe(separable, cache, "--max_train_samples", "40")  # other training rows
    assert embeddings == [48, 16, 48, 16, 40]  # the validation split's rows are the same
    assert len(list(cache.glob("*.safetensors"))) == 5


def test_a_cache_file_from_another_model_is_never_used(separable, tmp_path, embeddings, caplog):
    cache = tmp_path / "cache"
    fitted_probe(separable, cache, "--seed", "7")
    other_model = {path: path.read_bytes() for path in cache.glob("*.safetensors")}
    fitted_probe(separable, cache)
    for path in set(cache.glob("*.safetensors")) - set(other_model):
        split = path.name.split("-")[0]  # another model's features copied under our name
        path.write_bytes(next(v for k, v in other_model.items() if k.name.startswith(split)))
    embedded = len(embeddings)
    with caplog.at_level(logging.WARNING, logger="medft"):
        fitted_probe(separable, cache)
    assert len(embeddings) == embedded + 2
    assert "was made from another model (its recorded model differ" in caplog.text
    assert "not using it: computing the features again" in caplog.text


def test_the_probe_learns_a_separable_task_and_becomes_the_model_head(separable, tmp_path):
    probe = fitted_probe(
        separable, tmp_path / "cache", "--num_train_epochs", "30", "--learning_rate", "0.01"
    )
    assert probe.fit.validation["accuracy"] == 1.0
    assert probe.fit.best_epoch <= probe.fit.epochs <= 30
    steps = [entry for entry in probe.fit.history if "eval_macro_f1" in entry]
    assert [entry["epoch"] for entry in steps] == list(range(1, probe.fit.epochs + 1))


def test_default_cache_is_inside_the_prepared_dataset(tmp_path):
    dataset = Path(
        saved_splits({"train": shades(8, 0), "validation": shades(4, 1)}, tmp_path / "small")
    )
    data_args, model_args, args = parse_recipe(
        FIXTURES / "tiny_timm.yaml",
        [
            "--dataset_name",
            str(dataset),
            "--output_dir",
            str(tmp_path / "out"),
            "--training_mode",
            "linear_probe",
        ],
    )
    data = load_data(data_args, args)
    build_model(
        model_args, data.task, start_head=LinearProbe(data, data_args, model_args, args).start_head
    )
    assert sorted(p.name.split("-")[0] for p in (dataset / CACHE_FOLDER).iterdir()) == [
        "train",
        "validation",
    ]


@pytest.fixture(scope="module")
def probed(separable, tmp_path_factory) -> Path:
    """`medft probe` on the separable scans: a saved model folder."""
    root = tmp_path_factory.mktemp("probed")
    code = main(
        [
            "probe",
            str(FIXTURES / "tiny_timm.yaml"),
            "--dataset_name",
            str(separable),
            "--output_dir",
            str(root / "model"),
            "--feature_cache_dir",
            str(root / "cache"),
            "--num_train_epochs",
            "10",
            "--learning_rate",
            "0.01",
        ]
    )
    assert code == 0
    return root / "model"


def test_medft_probe_saves_a_model_like_any_other(probed):
    for name in (
        "metrics.json",
        "thresholds.json",
        "test_scores.safetensors",
        "README.md",
        "ood_statistics.safetensors",
        "training_curves.png",
        "trainer_state.json",
    ):
        assert (probed / name).is_file(), name
    timings = json.loads((probed / "train_results.json").read_text())
    assert timings["probe_head_seconds"] > 0 and timings["probe_embedded_images"] == 64
    assert "| training_mode | linear_probe |" in (probed / "README.md").read_text()
    metrics = json.loads((probed / "metrics.json").read_text())["metrics"]
    assert metrics["accuracy"] == 1.0  # the test split


def test_the_saved_probe_gives_pipeline_the_head_s_probabilities(probed, separable):
    """Plain pipeline() on the saved folder scores the validation images as the probe's head
    scores their cached features."""
    cached = next((probed.parent / "cache").glob("validation-*.safetensors"))
    features = load_file(cached)["features"].astype(np.float64)
    model = AutoModelForImageClassification.from_pretrained(probed)
    weight, bias = (
        model.timm_model.fc.weight.detach().double().numpy(),
        model.timm_model.fc.bias.detach().double().numpy(),
    )
    logits = features @ weight.T + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    classifier = pipeline("image-classification", model=str(probed))
    validation = Dataset.load_from_disk(str(separable / "validation"))
    for row, image in enumerate(validation["image"][:6]):
        scores = {
            item["label"]: item["score"] for item in classifier(image.convert("RGB"), top_k=2)
        }
        assert [scores["dark"], scores["bright"]] == pytest.approx(expected[row], abs=1e-4)


def test_evaluate_and_predict_take_the_probe(probed, separable, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            str(probed),
            "--dataset",
            str(separable),
            "--output",
            str(tmp_path / "evaluation"),
            "--bootstrap-resamples",
            "20",
        ]
    )
    assert code == 0
    evaluated = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["metrics"]
    trained = json.loads((probed / "metrics.json").read_text())["metrics"]
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"])
    code = main(
        [
            "predict",
            "--model",
            str(probed),
            str(separable),
            "--split",
            "test",
            "--output",
            str(tmp_path / "predictions.csv"),
            "--num-workers",
            "0",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert len(rows) == 16
    capsys.readouterr()


def test_probe_then_finetune_starts_from_the_probe_head(probed, separable, tmp_path, monkeypatch):
    started = {}
    real_train = MedftTrainer.train

    def recording(trainer, *args, **kwargs):
        started["fc"] = trainer.model.timm_model.fc.weight.detach().clone()
        return real_train(trainer, *args, **kwargs)

    monkeypatch.setattr(MedftTrainer, "train", recording)
    code = main(
        [
            "train",
            str(FIXTURES / "tiny_timm.yaml"),
            "--dataset_name",
            str(separable),
            "--output_dir",
            str(tmp_path / "lpft"),
            "--feature_cache_dir",
            str(probed.parent / "cache"),
            "--training_mode",
            "probe_then_finetune",
            "--probe_epochs",
            "10",
            "--probe_learning_rate",
            "0.01",
            "--bootstrap_resamples",
            "0",
        ]
    )
    assert code == 0
    probe_head_weights = AutoModelForImageClassification.from_pretrained(probed).timm_model.fc
    assert torch.allclose(started["fc"], probe_head_weights.weight, atol=1e-6)
    timings = json.loads((tmp_path / "lpft" / "train_results.json").read_text())
    assert timings["probe_embedded_images"] == 0 and timings["train_runtime"] > 0


def test_probe_hidden_is_the_architecture_s_own_mlp_head(separable, tmp_path):
    model_args = tiny_timm("timm/convnext_atto", probe_hidden=8)
    probe = fitted_probe(
        separable, tmp_path / "cache", "--probe_hidden", "8", model_args=model_args
    )
    assert [type(module).__name__ for module in probe.fit.head] == ["Sequential", "Linear"]
    assert probe.fit.head[0].fc.out_features == 8
    output = tmp_path / "mlp"
    code = main(["probe", str(FIXTURES / "tiny_timm.yaml"), "--dataset_name", str(separable),
                 "--output_dir", str(output), "--feature_cache_dir", str(tmp_path / "cache"),
                 "--model_name_or_path", "timm/convnext_atto", "--probe_hidden", "8",
                 "--ood_false_flag_rate", "0.1", "--bootstrap_resamples", "0"])  # fmt: skip
    assert code == 0
    classifier = pipeline("image-classification", model=str(output))
    assert classifier.model.timm_model.head.pre_logits.fc.out_features == 8
    scores = classifier(Image.new("RGB", (36, 36), 200), top_k=2)
    assert sum(item["score"] for item in scores) == pytest.approx(1.0)
    with pytest.raises(MedftError, match="probe_hidden: a transformers model's config cannot"):
        parse_recipe(
            FIXTURES / "tiny_vit.yaml",
            [
                "--dataset_name",
                "x",
                "--output_dir",
                "y",
                "--training_mode",
                "linear_probe",
                "--probe_hidden",
                "8",
            ],
        )
    with pytest.raises(MedftError, match="resnet18 does not take 'head_hidden_size'"):
        fitted_probe(separable, tmp_path / "cache", "--probe_hidden", "8")


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)


class TwoHeads(Body):
    """Logits averaged from two heads (as a distilled model's): no single classifier layer."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier, self.distillation = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, pixel_values):
        pooled = self.conv(pixel_values).mean((2, 3))
        return SimpleNamespace(logits=(self.classifier(pooled) + self.distillation(pooled)) / 2)


class TokenHead(Body):
    """The classifier applied to every position, then averaged: no pooled feature."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(4, 2)

    def forward(self, pixel_values):
        tokens = self.conv(pixel_values).flatten(2).transpose(1, 2)
        return SimpleNamespace(logits=self.classifier(tokens).mean(1))


@pytest.mark.parametrize("model", [TwoHeads(), TokenHead()], ids=["two_heads", "tokens"])
def test_a_model_without_one_pooled_feature_and_classifier_is_refused(model):
    spec = SimpleNamespace(mean=(0.5, 0.5, 0.5), size=(8, 8))
    with pytest.raises(MedftError, match="logits are not its classifier layer"):
        check_probe_head(model, ["classifier"], probe_head(model, ["classifier"]), "odd", spec)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--training_mode", "probing"], "training_mode must be one of finetune, linear_probe"),
        (["--training_mode", "linear_probe", "--lora_r", "4"], "so LoRA adapts nothing"),
        (
            ["--training_mode", "linear_probe", "--freeze", "partial", "--unfreeze_last_n", "1"],
            "linear_probe keeps the whole backbone frozen",
        ),
        (["--training_mode", "linear_probe", "--ema_decay", "0.99"], "ema_decay is a fine-tuning"),
        (
            ["--training_mode", "probe_then_finetune", "--freeze", "backbone"],
            "would train the probe's head twice",
        ),
        (["--probe_hidden", "8"], "probe_hidden is the linear probe's MLP head"),
        (["--training_mode", "linear_probe", "--probe_epochs", "0"], "probe_epochs must be"),
    ],
)
def test_settings_that_make_no_sense_are_one_line(overrides, message):
    with pytest.raises(MedftError, match=message):
        parse_recipe(
            FIXTURES / "tiny_timm.yaml", ["--dataset_name", "x", "--output_dir", "y", *overrides]
        )


def probe_search_recipe(folder: Path, space: dict) -> Path:
    recipe = folder / "search.yaml"
    keys = yaml.safe_load((FIXTURES / "tiny_timm.yaml").read_text())
    keys |= {"training_mode": "linear_probe", "search_space": space}
    recipe.write_text(yaml.safe_dump(keys))
    return recipe


def test_a_probe_search_embeds_once_for_all_trials(separable, tmp_path, embeddings, capsys):
    space = {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
    }
    recipe = probe_search_recipe(tmp_path, space)
    output = tmp_path / "search"
    code = main(
        [
            "search",
            str(recipe),
            "--n-trials",
            "3",
            "--dataset_name",
            str(separable),
            "--output_dir",
            str(output),
            "--feature_cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    assert embeddings == [48, 16]  # the first trial embeds; the others read the cache
    rows = list(csv.DictReader((output / "trials.csv").open()))
    assert len(rows) == 3 and all(float(row["objective"]) >= 0 for row in rows)
    _, _, args = parse_recipe(output / "best_recipe.yaml")
    assert args.training_mode == "linear_probe" and 1e-3 <= args.learning_rate <= 1e-1
    capsys.readouterr()


def test_a_probe_search_refuses_keys_the_probe_does_not_use(separable, tmp_path, capsys):
    space = {"layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}
    recipe = probe_search_recipe(tmp_path, space)
    code = main(
        [
            "search",
            str(recipe),
            "--dataset_name",
            str(separable),
            "--output_dir",
            str(tmp_path / "search"),
        ]
    )
    assert code == 2
    assert "'layer_decay' is not a setting of the linear probe" in capsys.readouterr().err


def test_data_fingerprints_name_the_rows_as_used(separable, tmp_path):
    data_args = DataArguments(str(separable), max_train_samples=10)
    args = MedftTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    data = load_data(data_args, args)
    assert set(data.fingerprints) == {"train", "validation", "test"}
    assert data.fingerprints["train"] == data.train_set._fingerprint
    assert data.fingerprints["train"] != data.identity["fingerprints"]["train"]  # 10 rows of 48


def test_probe_then_finetune_with_lora_starts_from_the_probe_head(separable, tmp_path):
    data_args, model_args, args = probe_arguments(
        separable, tmp_path / "cache", "--training_mode", "probe_then_finetune", "--lora_r", "4"
    )
    set_seed(args.seed)
    data = load_data(data_args, args)
    probe = LinearProbe(data, data_args, model_args, args)
    built = build_model(model_args, data.task, start_head=probe.start_head)
    assert built.uses_lora
    trained_head = merged(built.model).timm_model.fc  # the copy LoRA trains in full
    assert torch.equal(trained_head.weight, probe.fit.head[0].weight)


def test_a_multilabel_probe_takes_the_task_s_loss_and_metric(nih_prepared, tmp_path):
    probe = fitted_probe(nih_prepared, tmp_path / "cache", "--class_weighting", "balanced")
    assert "mean_auroc" in probe.fit.validation
    assert any("eval_micro_f1" in entry for entry in probe.fit.history)


def test_the_benchmark_sets_the_modes_side_by_side(monkeypatch):
    """benchmarks/finetune_real.py's mode rows, as its table shows them (the runs themselves
    take minutes: `--modes-only --epochs 1 --seeds 42 --image-size 64 --max-samples 48`)."""
    monkeypatch.syspath_prepend(str(FIXTURES.parents[1] / "benchmarks"))
    from finetune_real import MODES, modes_table

    def run(accuracy, train, epochs, embedding=None, head=None):
        return {"balanced_accuracy": accuracy, "balanced_accuracy_ci": [accuracy - 0.1, accuracy],
                "wall_seconds": train + 5, "train_seconds": train, "epochs_run": epochs,
                "embedding_seconds": embedding, "head_seconds": head}  # fmt: skip

    rows = {
        "linear probe (seed 42)": run(0.70, 0.5, 30, embedding=40.0, head=0.5),
        "linear probe (seed 43)": run(0.72, 0.7, 30, embedding=0.1, head=0.7),
        "fine-tuning (seed 42)": run(0.80, 300, 3),
        "probe then fine-tune (seed 42)": run(0.82, 310, 3, embedding=0.1, head=0.6),
    }
    table = modes_table(rows)
    assert [line.split(" | ")[0] for line in table.splitlines()[2:5]] == [f"| {m}" for m in MODES]
    assert "| linear probe | 0.710 (0.700 [0.600, 0.700]; 0.720 [0.620, 0.720]) |" in table
    assert "| 40.0, 0.1 | 0.60 |" in table  # the first seed embeds, the second reads the cache
    assert "trains in 0.6% of one fine-tuning epoch's time (100.0 s)" in table
