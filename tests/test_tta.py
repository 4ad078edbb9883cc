"""Test-time augmentation: which views, the chest X-ray rule, and averaged probabilities."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers import pipeline

from medft.cli import main
from medft.errors import MedftError
from medft.inference.tta import tta_views


@pytest.fixture
def flipped_model(trained_binary, tmp_path):
    """The trained binary model, as if its recipe had used horizontal flips."""
    folder = tmp_path / "model"
    shutil.copytree(trained_binary, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["data"]["horizontal_flip"] = 0.5
    (folder / "recipe.json").write_text(json.dumps(recipe))
    return folder


def names(views):
    return [view.name for view in views]


def test_the_views_follow_the_flips_the_model_was_trained_with(trained_binary, flipped_model):
    assert json.loads((trained_binary / "recipe.json").read_text())["data"]["horizontal_flip"] == 0
    assert names(tta_views(["flip"], [flipped_model])) == ["original", "horizontal flip"]
    assert names(tta_views(["flip"], [trained_binary])) == ["original"]  # no flips trained
    assert names(tta_views(["hflip", "scales"], [flipped_model])) == [
        "original",
        "horizontal flip",
        "zoom 0.9",
        "zoom 0.8",
    ]
    with pytest.raises(MedftError, match="trained without horizontal flips.*chest X-ray"):
        tta_views(["hflip"], [trained_binary])
    with pytest.raises(MedftError, match="choose from flip, hflip, vflip, scales"):
        tta_views(["rotate"], [trained_binary])


def test_a_model_without_its_recipe_needs_the_flips_named(flipped_model):
    (flipped_model / "recipe.json").unlink()
    with pytest.raises(MedftError, match="--tta flip needs the recipe.json"):
        tta_views(["flip"], [flipped_model])
    assert names(tta_views(["vflip"], [flipped_model])) == ["original", "vertical flip"]


def test_a_flip_view_is_the_flipped_image_and_the_views_are_averaged():
    pixels = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    hflip, zoom = tta_views(["hflip", "scales"], [])[1:3]
    assert torch.equal(hflip.apply(pixels)[..., 0], pixels[..., -1])
    assert zoom.apply(pixels).shape == pixels.shape


def test_predict_and_evaluate_average_the_views(
    flipped_model, brain_raw, brain_binary, tmp_path, capsys
):
    scans = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:2]
    output = tmp_path / "p.csv"
    assert main(["predict", "--model", str(flipped_model), *map(str, scans), "--tta", "flip",
                 "--output", str(output), "--num-workers", "0"]) == 0  # fmt: skip
    assert "views averaged: original, horizontal flip" in capsys.readouterr().out
    classifier = pipeline("image-classification", model=str(flipped_model))
    with output.open() as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    for scan in scans:
        image = Image.open(scan).convert("RGB")
        views = [image, ImageOps.mirror(image)]
        expected = np.mean(
            [
                [s["score"] for s in sorted(classifier(v, top_k=2), key=lambda s: s["label"])]
                for v in views
            ],
            axis=0,
        )
        row = rows[str(scan)]
        got = {row["label_1"]: float(row["score_1"]), row["label_2"]: float(row["score_2"])}
        assert [got["normal"], got["tumor"]] == pytest.approx(expected, abs=1e-4)

    assert main(["evaluate", "--model", str(flipped_model), "--dataset", str(brain_binary),
                 "--tta", "flip", "--output", str(tmp_path / "eval"),
                 "--bootstrap-resamples", "0"]) == 0  # fmt: skip
    assert "averaged over original, horizontal flip" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["tta"] == ["original", "horizontal flip"]
