"""`MedftTrainingArguments`: `TrainingArguments` with medft's defaults and techniques."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from transformers import IntervalStrategy, TrainingArguments

from medft.config.checks import check_finite
from medft.config.evaluation import THRESHOLD_METHODS, check_alpha
from medft.config.fields import column_names
from medft.config.losses import LossOptions, check_loss_options
from medft.config.probe import ProbeOptions, check_probe_options
from medft.errors import MedftError
from medft.evaluation.bootstrap import DEFAULT_RESAMPLES
from medft.progress import on_a_terminal

AUTO = "auto"
EXPONENTIAL = "exponential"
CALIBRATIONS = ("none", "temperature", "temperature_per_finding")


MAX_AUTO_WORKERS = 8
MAX_DEFAULT_EVAL_BATCH = 256


def cores_per_process() -> int:
    """The cores this process may run on, shared among the processes of this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def loader_workers(value: str | int) -> int:
    """``dataloader_num_workers`` as a number: auto leaves one core of this process's share to
    the process itself."""
    if value == AUTO:
        return max(1, min(MAX_AUTO_WORKERS, cores_per_process() - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise MedftError(
            f"dataloader_num_workers must be a number or auto, got {value!r}."
        ) from None
    if workers < 0:
        raise MedftError(f"dataloader_num_workers must not be negative, got {workers}.")
    return workers


def default_eval_batch(train_batch: int) -> int:
    """Twice the training batch, capped, but never below the training batch."""
    return max(train_batch, min(2 * train_batch, MAX_DEFAULT_EVAL_BATCH))


def check_optimisation(args: TrainingArguments) -> None:
    """Values that `TrainingArguments` takes without a word but that fail, or train nothing,
    only once the data and the model are loaded."""
    for name in (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
    ):
        if getattr(args, name) < 1:
            raise MedftError(f"{name} must be at least 1, got {getattr(args, name)}.")
    if args.learning_rate <= 0:
        raise MedftError(f"learning_rate must be positive, got {args.learning_rate}.")
    for name in ("weight_decay", "adam_epsilon"):
        if getattr(args, name) < 0:
            raise MedftError(f"{name} must not be negative, got {getattr(args, name)}.")
    for name in ("adam_beta1", "adam_beta2", "label_smoothing_factor"):
        if not 0 <= getattr(args, name) < 1:
            raise MedftError(f"{name} must be in [0, 1), got {getattr(args, name)}.")
    if args.num_train_epochs < 0 or (args.num_train_epochs == 0 and args.max_steps <= 0):
        raise MedftError(
            f"num_train_epochs must be positive (or give max_steps), got {args.num_train_epochs}."
        )


@dataclass
class MedftTrainingArguments(ProbeOptions, LossOptions, TrainingArguments):
    """`transformers.TrainingArguments` with defaults for fine-tuning image classifiers, the
    linear probe's keys (`ProbeOptions`) and the training loss (`LossOptions`)."""

    output_dir: str = field(metadata={"help": "Where checkpoints, the model and its reports go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run in output_dir: remove every file a run owns there (model, "
            "checkpoints, reports; other files are kept) and train afresh. Without it, a rerun "
            "resumes its own run and refuses a folder holding another."
        },
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint."})
    logging_strategy: str = field(default="epoch", metadata={"help": "When to log the loss."})
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "Leave NaN and inf losses out of the logged loss. Off by default: the check "
            "reads every training step's loss on the host, which makes the CPU wait for the "
            "GPU each step; off, a diverged step shows as a nan loss in the log."
        },
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Keep the epoch with the best `metric_for_best_model`."}
    )
    metric_for_best_model: str | None = field(
        default=AUTO,
        metadata={
            "help": "Validation metric that picks the best epoch; `auto` is `macro_f1` for "
            "single-label and `mean_auroc` for multi-label data."
        },
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the best one is always kept)."}
    )
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch per device."})
    per_device_eval_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Eval batch per device. Default: twice the training batch (evaluation keeps "
            "no activations for backward, no gradients and no optimizer state, so it fits where "
            "training fits), at most 256 (the float32 batches waiting in the loader's queue) "
            "unless the training batch itself is larger."
        },
    )
    dataloader_num_workers: str = field(
        default=AUTO,
        metadata={
            "help": "Processes decoding and augmenting images: a number, or auto (the cores "
            "this process may use, one left for it, at most 8)."
        },
    )
    dataloader_persistent_workers: bool = field(
        default=True, metadata={"help": "Keep the loader workers between epochs (with workers)."}
    )
    accelerator_config: dict | str | None = field(
        default_factory=lambda: {"non_blocking": True},
        metadata={
            "help": "Accelerate's settings; non_blocking copies pinned batches to the GPU "
            "while it computes."
        },
    )
    channels_last: bool | None = field(
        default=None,
        metadata={
            "help": "Lay weights and activations out channels-last, which oneDNN and cuDNN run "
            "convolutions fastest in (2x for EfficientNet-Lite0 training on a 2-core Xeon); the "
            "same arithmetic. Default: on for convolutional networks, off for ViT-like ones."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept false: the image column is read by the transforms."}
    )
    label_names: list[str] | None = field(
        default_factory=lambda: ["labels"], metadata={"help": "The batch key holding the labels."}
    )
    layer_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay (timm / MAE fine-tuning): block i of n gets "
            "lr * layer_decay^(n - i); the head gets lr. E.g. 0.75."
        },
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "Any schedule of transformers (linear, cosine, cosine_with_restarts, "
            "polynomial, constant, constant_with_warmup, inverse_sqrt, reduce_lr_on_plateau, "
            "cosine_with_min_lr, warmup_stable_decay, ...) or exponential."
        },
    )
    lr_decay_rate: float = field(
        default=0.96,
        metadata={"help": "lr_scheduler_type: exponential multiplies the rate by this ..."},
    )
    lr_decay_steps: int = field(
        default=1000, metadata={"help": "... every this many optimizer steps (after warmup)."}
    )
    lr_decay_staircase: bool = field(
        default=False, metadata={"help": "Decay in steps rather than continuously."}
    )
    class_weighting: str = field(
        default="none",
        metadata={
            "help": "none | balanced: weight the loss by inverse class frequency (cross-entropy "
            "class weights; for multi-label, BCE pos_weight = negatives / positives per finding)."
        },
    )
    sampler: str = field(
        default="random", metadata={"help": "random | weighted (oversample rare classes)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement of the metric."},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "The smallest change that counts as an improvement."}
    )
    search_space: dict | str | None = field(
        default=None,
        metadata={
            "help": "For `medft search`: key -> {type: float|int|categorical, low, high, log, "
            "choices}. A JSON string on the command line."
        },
    )
    train_metrics_samples: int = field(
        default=0,
        metadata={
            "help": "At each evaluation, also re-score this many training images as validation "
            "is scored (no augmentation, the weights of that moment): a second train curve, for "
            "a second pass over them. The default train curve is free: the epoch's own "
            "augmented batches as trained on (train_aug_<metric>; the loss only with MixUp / "
            "CutMix)."
        },
    )
    eval_cache_gb: float = field(
        default=2.0,
        metadata={
            "help": "Preprocess the validation split once and keep it in memory (uint8 where "
            "that holds the processor's output exactly, else float32) when it takes at most this "
            "many GB per process: each evaluation then skips decoding and the processor. 0 "
            "turns it off. The validation split of NIH ChestX-ray14 at 224 px takes 1.3 GB."
        },
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay (timm's "
            "ModelEmaV3, e.g. 0.999), scored beside the raw weights at each evaluation; the "
            "better of the two picks the best epoch and is what is saved (the card says which)."
        },
    )
    calibration: str = field(
        default="none",
        metadata={
            "help": "none | temperature | temperature_per_finding: fit a temperature on the "
            "validation split after training (one for all logits; multi-label: or one per "
            "finding) and fold it into the classifier, so the saved model's plain pipeline() "
            "returns calibrated probabilities. Thresholds are tuned on the calibrated scores."
        },
    )
    conformal: float | None = field(
        default=None,
        metadata={
            "help": "Alpha (e.g. 0.1): fit conformal prediction sets on the validation split's "
            "final scores that hold the true label with probability 1 - alpha (per class; "
            "multi-label: per finding and state), saved as conformal.json for `medft predict`, "
            "`serve` and `export`; the evaluation reports their coverage."
        },
    )
    ood_false_flag_rate: float | None = field(
        default=0.05,
        metadata={
            "help": "Out-of-distribution flags: after training, the statistics of the training "
            "images' penultimate-layer features are saved with the model "
            "(ood_statistics.safetensors), and images farther from them (Mahalanobis distance) "
            "than a threshold are flagged by medft predict, evaluate and serve; the threshold "
            "is set on the validation split so that this share of images like it is flagged. "
            "null: save no statistics."
        },
    )
    # evaluation after training (what `medft evaluate` does) ---------------------------------
    bootstrap_resamples: int = field(
        default=DEFAULT_RESAMPLES,
        metadata={
            "help": "Bootstrap resamples for the 95% confidence intervals of the final "
            "evaluation (of patients when the data has patient_id); 0 turns them off."
        },
    )
    threshold_method: str = field(
        default="auto",
        metadata={
            "help": "How the final evaluation tunes decision thresholds on the validation split: "
            "youden | f1 | auto (youden for binary, f1 per finding for multi-label). Saved as "
            "thresholds.json, which `medft predict` applies."
        },
    )
    subgroups: list[str] | None = field(
        default=None,
        metadata={
            "help": "Columns of the evaluated split to report performance by (e.g. [sex, "
            "age_band, view_position]): per group the count, prevalence, headline metrics and "
            "the gap to the rest with 95% CIs, in metrics.json and the model card. Default: the "
            "attributes `medft prepare` declared for the dataset; none: no subgroups."
        },
    )

    def __post_init__(self) -> None:
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = default_eval_batch(self.per_device_train_batch_size)
        check_finite(self)
        check_optimisation(self)
        self.dataloader_num_workers = loader_workers(self.dataloader_num_workers)
        if not self.dataloader_num_workers:
            self.dataloader_persistent_workers = False  # nothing to keep
        if self.class_weighting not in ("none", "balanced"):
            raise MedftError(
                f"class_weighting must be none or balanced, got '{self.class_weighting}'."
            )
        check_loss_options(self, self.class_weighting)
        if self.sampler not in ("random", "weighted"):
            raise MedftError(f"sampler must be random or weighted, got '{self.sampler}'.")
        if self.threshold_method not in THRESHOLD_METHODS:
            raise MedftError(
                f"threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, "
                f"got '{self.threshold_method}'."
            )
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise MedftError(f"ema_decay must be in (0, 1), e.g. 0.999, got {self.ema_decay}.")
        if self.calibration not in CALIBRATIONS:
            raise MedftError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got '{self.calibration}'."
            )
        check_alpha(self.conformal, "conformal")
        check_probe_options(self)
        self.subgroups = column_names(self.subgroups, "subgroups")
        if self.eval_cache_gb < 0:
            raise MedftError(f"eval_cache_gb must be >= 0, got {self.eval_cache_gb}.")
        rate = self.ood_false_flag_rate
        if rate is not None and not 0 < rate < 1:
            raise MedftError(
                f"ood_false_flag_rate must be in (0, 1), e.g. 0.05, or null for no "
                f"out-of-distribution statistics; got {rate}."
            )
        if self.bootstrap_resamples < 0:
            raise MedftError(f"bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise MedftError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")
        if not 0 < self.lr_decay_rate <= 1 or self.lr_decay_steps < 1:
            raise MedftError("lr_decay_rate must be in (0, 1] and lr_decay_steps at least 1.")
        if isinstance(self.search_space, str):
            try:
                self.search_space = json.loads(self.search_space)
            except json.JSONDecodeError as error:
                raise MedftError(f"search_space is not valid JSON: {error}.") from None
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise MedftError("early_stopping_patience must be at least 1.")
            if self.eval_strategy in ("no", IntervalStrategy.NO) or not self.load_best_model_at_end:
                raise MedftError(
                    "early_stopping_patience needs evaluations and load_best_model_at_end: true "
                    "(set eval_strategy and save_strategy to the same value, e.g. epoch)."
                )
        if self.disable_tqdm is None and not on_a_terminal():
            self.disable_tqdm = True  # a log gets the Trainer's log lines, not redrawn bars
        exponential = self.exponential_decay
        if exponential:  # TrainingArguments accepts only its own schedule names
            self.lr_scheduler_type = "constant"
        super().__post_init__()
        if exponential:
            self.lr_scheduler_type = EXPONENTIAL

    @property
    def exponential_decay(self) -> bool:
        """Derived, so a search trial that sets lr_scheduler_type switches it too."""
        return self.lr_scheduler_type == EXPONENTIAL
