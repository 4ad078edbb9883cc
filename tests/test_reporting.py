from medft.data.loading import TaskInfo
from medft.reporting import CardFacts, format_run_summary, model_card

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


def test_run_summary_shows_metrics_and_how_to_use():
    summary = format_run_summary("outputs/x", {"test_accuracy": 0.9, "test_loss": 0.2})
    assert "accuracy             0.9000" in summary and "loss" not in summary.split("Model")[0]
    assert 'pipeline("image-classification", model="outputs/x")' in summary
