import numpy as np
from huggingface_hub import ModelCard

from medft.config import EvaluationOptions
from medft.evaluation.card import CardFacts, model_card, replace_results
from medft.evaluation.evaluate import SplitScores, evaluate_scores
from medft.prepare.chestxray14 import FINDINGS as NIH_FINDINGS
from medft.tasks import TaskInfo
from tests.helpers import binary_report

TASK = TaskInfo(["normal", "tumor"], multi_label=False)


def facts(**changes):
    values = dict(
        model_name_or_path="timm/resnet50",
        base_model="timm/resnet50.a1_in1k",
        dataset_name="data/brain-binary",
        task=TASK,
        split_sizes={"train": 100, "validation": 20, "test": 20},
        hyperparameters={"learning_rate": 1e-4, "num_train_epochs": 2},
        test_metrics={"test_accuracy": 0.9, "test_auroc": 0.95, "test_loss": 0.3},
        validation_metrics={"eval_accuracy": 0.85},
        image_size=(224, 224),
        repo_id="me/brain",
    )
    return CardFacts(**(values | changes))


def test_model_card_says_what_a_user_needs():
    card = model_card(facts())
    assert card.data.base_model == "timm/resnet50.a1_in1k"
    assert card.data.pipeline_tag == "image-classification"
    assert "binary" in card.data.tags and "medical" in card.data.tags
    text = card.text
    assert "`normal`, `tumor`" in text
    assert "| accuracy | 0.9000 |" in text and "| auroc | 0.9500 |" in text
    assert "| loss |" not in text  # losses are not results
    assert "train: 100, validation: 20, test: 20" in text and "224x224" in text
    assert "| learning_rate | 0.0001 |" in text
    assert 'pipeline("image-classification", model="me/brain")' in text
    assert "Not for clinical use" in text and "training_curves.png" in text


def test_random_init_card_has_no_base_model():
    card = model_card(facts(base_model=None, model_name_or_path="vit"))
    assert card.data.base_model is None
    assert "random initialisation" in card.text


def test_card_shows_the_evaluation_and_gives_the_hub_a_model_index():
    report = binary_report()
    card = model_card(facts(evaluation=report))
    text = card.text
    auroc = report.confidence_intervals["auroc"]
    assert f"| auroc | {7 / 9:.4f} | {auroc['low']:.4f} - {auroc['high']:.4f} |" in text
    assert "bootstrap over 50 resamples of images" in text
    assert "thresholds.json" in text and "expected calibration error" in text
    assert "![ROC curves](roc_curves.png)" in text and "confusion_matrix.png" not in text
    results = card.data.to_dict()["model-index"][0]["results"]
    by_type = {metric["type"]: metric for result in results for metric in result["metrics"]}
    assert by_type["roc_auc"]["value"] == round(7 / 9, 4)
    assert "95% CI" in by_type["roc_auc"]["name"]
    assert {"roc_auc", "average_precision", "recall", "specificity", "accuracy"} <= set(by_type)
    assert results[0]["dataset"]["split"] == "test"
    assert ModelCard(str(card)).data.eval_results  # the metadata block reads back


def test_nih_card_marks_chexnet_as_a_different_split():
    task = TaskInfo(list(NIH_FINDINGS), multi_label=True, label_column="labels")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (40, 14))
    scores = SplitScores(np.clip(labels * 0.5 + rng.random((40, 14)) * 0.5, 0, 1), labels)
    report = evaluate_scores(
        task, scores, split="test", tuning=scores, options=EvaluationOptions(bootstrap_resamples=20)
    )
    text = model_card(facts(task=task, evaluation=report)).text
    assert "CheXNet AUROC*" in text and "| Hernia |" in text and "0.9164" in text
    assert "different split" in text


def test_calibrate_replaces_the_subgroup_section_with_the_results():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    probs = np.clip(labels * 0.4 + rng.random(80) * 0.6, 0, 1)
    site = np.array(["A", "B"] * 40, dtype=object)
    scores = SplitScores(np.stack([1 - probs, probs], 1), labels, attributes={"site": site})
    options = EvaluationOptions(bootstrap_resamples=20)
    before = evaluate_scores(TASK, scores, split="test", options=options)
    card = str(model_card(facts(evaluation=before)))
    assert card.count("## Performance by subgroup") == 1 and "### site" in card
    after = evaluate_scores(TASK, scores, split="test", options=options)
    after.subgroups[0].groups[0].images = 12345  # what a new evaluation would change
    replaced = replace_results(card, after)
    assert replaced.count("## Performance by subgroup") == 1 and "| A | 12345 |" in replaced
    assert replaced.count("## Best validation epoch") == 1
