"""The linear probe: the model's own head trained on the frozen backbone's cached features in
seconds, then put back into the model (`training_mode: linear_probe`, `medft probe`), or
starting its fine-tuning (`probe_then_finetune`: LP-FT, Kumar et al. 2022).

The probe is a copy of the modules that turn the pooled features into the logits
(`BackboneFamily.probe_layers`: the classifier layer, or a timm MLP head), checked first to
be just that: on random pixels, the copy applied to the caught features gives the model's
logits. It trains with the task's loss (class weighting, label smoothing), AdamW with the
recipe's weight decay on its weights and a cosine decay of the learning rate, and keeps the
epoch that scored best on the validation split (`metric_for_best_model`; with
`early_stopping_patience`, it stops early). Its weights then go into the model's own modules,
so the model is saved, evaluated and served by the same code as a fine-tuned one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup
from transformers.trainer_utils import TrainOutput

from medft.config import AUTO, DataArguments, MedftTrainingArguments, ModelArguments
from medft.config.probe import LINEAR_PROBE
from medft.data.pipeline import TrainingData
from medft.errors import MedftError
from medft.inference.ood import FeatureHook
from medft.modeling.families import family_of
from medft.public_names import model_name
from medft.tasks import TaskInfo
from medft.training.features import FeatureStore, cache_folder
from medft.training.losses import ClassificationLoss, build_loss

logger = logging.getLogger("medft")


@dataclass
class ProbeFit:
    """The trained head (its best epoch's weights) and how training went."""

    head: nn.Sequential
    history: list[dict[str, float]]  # per epoch, as the Trainer logs: loss, then eval_*
    best_epoch: int
    validation: dict[str, float]  # the best epoch's validation metrics
    epochs: int
    steps: int
    train_loss: float  # the mean over all steps
    seconds: float


@dataclass(frozen=True)
class ProbeSettings:
    epochs: int
    learning_rate: float
    weight_decay: float
    batch_size: int
    dropout: float
    metric: str
    patience: int | None
    threshold: float
    seed: int

    @classmethod
    def of(cls, args: MedftTrainingArguments, model_args: ModelArguments, task: TaskInfo):
        metric = args.metric_for_best_model
        metric = task.main_metric if metric in (None, AUTO) else metric.removeprefix("eval_")
        return cls(
            epochs=args.probe_epochs or max(1, math.ceil(args.num_train_epochs)),
            learning_rate=args.probe_learning_rate or args.learning_rate,
            weight_decay=args.weight_decay,
            batch_size=args.per_device_train_batch_size,
            dropout=model_args.head_dropout,
            metric=metric,
            patience=args.early_stopping_patience,
            threshold=args.early_stopping_threshold,
            seed=args.seed,
        )

    @property
    def greater_is_better(self) -> bool:
        return not self.metric.endswith("loss")

    def improves(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return True
        gain = value - best if self.greater_is_better else best - value
        return gain > self.threshold


def probe_head(model: nn.Module, layers: list[str]) -> nn.Sequential:
    """A copy of the model's modules that turn the pooled features into the logits."""
    return nn.Sequential(*(copy.deepcopy(model.get_submodule(name)) for name in layers))


def check_probe_head(model: nn.Module, layers: list[str], head: nn.Sequential, name: str, spec):
    """Refuse a model whose logits are not ``head`` applied to one pooled feature vector per
    image (the input of ``layers[0]``): random pixels through both must agree."""
    device = next(model.parameters()).device
    pixels = torch.randn(2, len(spec.mean), *spec.size, device=device)
    hook = FeatureHook(model, layer=model.get_submodule(layers[0]))
    with torch.inference_mode(), hook.hooked():
        logits = model(pixel_values=pixels).logits.float()
        caught = list(hook.caught)
        try:
            same = len(caught) == 1 and torch.allclose(head(caught[0]), logits, atol=1e-3)
        except RuntimeError:  # the caught input is no feature vector the head takes
            same = False
    if not same:
        raise MedftError(
            f"linear probe: {name}'s logits are not its classifier layer ({layers[-1]}) applied "
            "to one pooled feature vector per image, which the probe needs; use training_mode: "
            "finetune."
        )


def fit_head(
    head: nn.Sequential,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    task: TaskInfo,
    loss: ClassificationLoss,
    settings: ProbeSettings,
) -> ProbeFit:
    """Train ``head`` on (features, encoded labels) of the train split, scoring the validation
    split after each epoch; the best epoch's weights are kept."""
    start = time.perf_counter()
    device = next(head.parameters()).device
    features, targets = (torch.as_tensor(train[0], device=device), task.loss_targets(train[1]))
    targets = targets.to(device)
    held_out = torch.as_tensor(validation[0], device=device)
    held_out_targets = task.loss_targets(validation[1]).to(device)
    decayed = [p for p in head.parameters() if p.ndim > 1]
    others = [p for p in head.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": settings.weight_decay}, {"params": others}],
        lr=settings.learning_rate,
        weight_decay=0.0,
    )
    per_epoch = math.ceil(len(features) / settings.batch_size)
    schedule = get_cosine_schedule_with_warmup(optimizer, 0, settings.epochs * per_epoch)
    generator = torch.Generator().manual_seed(settings.seed)
    history, losses, best, best_state, waited, epoch = [], [], None, None, 0, 0
    for epoch in range(1, settings.epochs + 1):
        head.train()
        epoch_losses = []
        for rows in torch.randperm(len(features), generator=generator).split(settings.batch_size):
            rows = rows.to(device)
            inputs = nn.functional.dropout(features[rows], settings.dropout, training=True)
            step_loss = loss(head(inputs), targets[rows])
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
            schedule.step()
            epoch_losses.append(step_loss.detach())
        losses += epoch_losses
        head.eval()
        with torch.no_grad():
            logits = head(held_out)
            metrics = task.metrics(task.probabilities(logits.cpu().numpy()), validation[1])
            metrics["loss"] = float(loss(logits, held_out_targets))
        if settings.metric not in metrics:
            raise MedftError(
                f"metric_for_best_model: the probe's validation scores have no "
                f"'{settings.metric}' (they have {', '.join(metrics)})."
            )
        step = epoch * per_epoch
        logged = {"epoch": epoch, "step": step}
        history.append({"loss": float(torch.stack(epoch_losses).mean())} | logged)
        history.append({f"eval_{k}": v for k, v in metrics.items()} | logged)
        best_value = None if best is None else best[1][settings.metric]
        if settings.improves(metrics[settings.metric], best_value):
            best, best_state, waited = (epoch, metrics), copy.deepcopy(head.state_dict()), 0
        else:
            waited += 1
            if settings.patience and waited >= settings.patience:
                break
    head.load_state_dict(best_state)
    return ProbeFit(
        head,
        history,
        best[0],
        best[1],
        epoch,
        epoch * per_epoch,
        float(torch.stack(losses).mean()),
        time.perf_counter() - start,
    )


@contextmanager
def scoring(model: nn.Module, device: torch.device):
    """The model in eval mode on ``device``, laid out as `medft predict` scores; put back as
    it was after."""
    training = model.training
    model.to(device, memory_format=torch.channels_last).eval()
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format).train(training)


def labelled_rows(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the images that could be read (an unreadable one has NaN features)."""
    readable = ~np.isnan(features).any(axis=1)
    return features[readable].astype(np.float32), labels[readable]


class LinearProbe:
    """The probe of one run: its head fitted when the model is built (`start_head`, before
    freezing and LoRA), then either standing in for training (`train`: linear_probe) or
    followed by it (probe_then_finetune)."""

    def __init__(
        self,
        data: TrainingData,
        data_args: DataArguments,
        model_args: ModelArguments,
        args: MedftTrainingArguments,
    ) -> None:
        self.data, self.data_args, self.model_args, self.args = data, data_args, model_args, args
        self.store = FeatureStore(
            cache_folder(data_args.dataset_name, args.feature_cache_dir),
            args.device,
            args.per_device_eval_batch_size,
            args.dataloader_num_workers,
        )
        self.fit: ProbeFit | None = None
        self.embedding_seconds, self.embedded_images = 0.0, 0

    def start_head(self, model: PreTrainedModel, processor: Any) -> None:
        """Embed (or read from the cache) the train and validation splits, fit the head on
        their features, and put its weights into ``model``."""
        family, name = family_of(model), model_name(self.model_args.model_name_or_path)
        layers = family.probe_layers(model)
        if self.model_args.head_hidden_size and len(layers) == 1:
            raise MedftError(
                f"{self.model_args.head_hidden_key}: {name} builds its MLP head in a way the probe "
                "cannot train as one (only heads with timm's pre_logits layer, e.g. ConvNeXt); "
                "remove it, or use training_mode: finetune."
            )
        task, data = self.data.task, self.data
        splits = {self.data_args.train_split: data.train_set,
                  self.data_args.eval_split: data.validation}  # fmt: skip
        with scoring(model, self.args.device):
            head = probe_head(model, layers)
            check_probe_head(model, layers, head, name, family.input_spec(processor))
            with self.args.main_process_first(desc="linear probe features"):
                found = self.store.features(
                    model, processor, layers, task, data.dicom, splits, data.fingerprints
                )
        self.embedding_seconds, self.embedded_images = found.seconds, found.embedded_images
        train, validation = (
            labelled_rows(found.features[split], task.encode(list(rows[task.label_column])))
            for split, rows in splits.items()
        )
        settings = ProbeSettings.of(self.args, self.model_args, task)
        args = self.args  # the loss fine-tuning would use
        loss = build_loss(
            task, data.train_labels, args.class_weighting, args.label_smoothing_factor, args
        )
        self.fit = fit_head(head, train, validation, task, loss, settings)
        for layer, trained in zip(layers, self.fit.head):
            model.get_submodule(layer).load_state_dict(trained.state_dict())
        logger.info(
            "Linear probe: head trained in %.2f s (epochs: %d, on %d images; best epoch %d, "
            "validation %s %.4f)",
            self.fit.seconds,
            self.fit.epochs,
            len(train[0]),
            self.fit.best_epoch,
            settings.metric,
            self.fit.validation[settings.metric],
        )

    @property
    def metrics(self) -> dict[str, float]:
        """The probe's timings, for train_results.json."""
        return {
            "probe_embedding_seconds": self.embedding_seconds,
            "probe_embedded_images": float(self.embedded_images),
            "probe_head_seconds": self.fit.seconds,
            "probe_best_epoch": float(self.fit.best_epoch),
        }

    def train(self, trainer: Any, checkpoint: str | None) -> TrainOutput:
        """What the run's training is: the probe itself (linear_probe: its history is the
        Trainer's), or fine-tuning from the probe's head."""
        if self.args.training_mode != LINEAR_PROBE:
            result = trainer.train(resume_from_checkpoint=checkpoint)
            return TrainOutput(
                result.global_step, result.training_loss, result.metrics | self.metrics
            )
        fit, state = self.fit, trainer.state
        state.log_history = list(fit.history)
        state.global_step, state.epoch, state.max_steps = fit.steps, float(fit.epochs), fit.steps
        metrics = {"train_runtime": fit.seconds, "train_loss": fit.train_loss,
                   "epoch": float(fit.epochs)}  # fmt: skip
        return TrainOutput(fit.steps, fit.train_loss, metrics | self.metrics)
