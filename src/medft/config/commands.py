"""The options of the `medft` commands that run a recipe (train, probe, show-augmentations,
search, cv, demo) and of `medft audit`.

Every command's options are a dataclass: the help text and the one default of each option.
`medft.cli` turns each into command-line options; those of preparing datasets are in
`config.prepare`, of evaluating in `config.evaluation`, of using a saved model in
`config.inference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medft.config.fields import positional
from medft.errors import MedftError
from medft.near_duplicates import DEFAULT_THRESHOLD, parse_threshold


@dataclass(kw_only=True)
class RecipeOverrides:
    """Any --key value after the command's own options: recipe keys overriding the recipe."""

    overrides: list[str] = field(default_factory=list, metadata={"internal": True})


@dataclass(kw_only=True)
class RecipeCommand(RecipeOverrides):
    """A command that reads a recipe; any --key value after it overrides the recipe."""

    recipe: Path = field(metadata=positional("a recipe YAML (see recipes/)"))


@dataclass(kw_only=True)
class TrainArguments(RecipeCommand):
    """medft train: fine-tune from a recipe in this process (for several processes:
    accelerate launch src/finetune.py RECIPE)."""


@dataclass(kw_only=True)
class ProbeArguments(TrainArguments):
    """medft probe: a linear probe on the frozen backbone's cached features (the recipe with
    training_mode: linear_probe), trained in seconds and saved as a model like any other."""


@dataclass(kw_only=True)
class ShowAugmentationsArguments(RecipeCommand):
    """medft show-augmentations: a grid of augmented training images, as the model sees them."""

    output: Path = field(default=Path("augmentations.png"), metadata={"help": "the PNG to write"})
    images: int = field(default=5, metadata={"help": "training images, one per row"})
    versions: int = field(default=6, metadata={"help": "augmented draws per image"})


@dataclass(kw_only=True)
class SearchArguments(RecipeCommand):
    """medft search: hyper-parameter search over the recipe's search_space (Optuna)."""

    n_trials: int = field(default=10, metadata={"help": "trials to run"})


@dataclass(kw_only=True)
class CvArguments(RecipeCommand):
    """medft cv: k-fold cross-validation grouped by patient, and the fold ensemble on the test
    split."""

    folds: int = field(default=5, metadata={"help": "folds over train + validation"})
    output: Path | None = field(
        default=None,
        metadata={
            "help": "folder for fold-0 ... fold-<k-1> and the summaries (default: the "
            "recipe's output_dir)"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "train every fold again, replacing the folds of an earlier "
            "cross-validation in the folder (their run files; others are kept)"
        },
    )

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise MedftError(f"--folds must be at least 2, got {self.folds}.")


@dataclass(kw_only=True)
class DemoArguments(RecipeOverrides):
    """medft demo: generate a brain-layout dataset, prepare it and fine-tune a small model."""

    output: Path = field(default=Path("medft-demo"), metadata={"help": "working folder"})
    per_class: int = field(default=20, metadata={"help": "generated scans per class"})


@dataclass(kw_only=True)
class AuditArguments:
    """medft audit: the near-duplicate leakage audit of a prepared dataset (near copies of an
    image across its splits), or of one dataset's training images against another's, without
    rewriting anything."""

    dataset: str = field(metadata=positional("a prepared dataset folder (or Hub dataset id)"))
    against: str | None = field(
        default=None,
        metadata={
            "help": "another prepared dataset: audit DATASET's train split against its "
            "splits (a model trained on one and tested on the other)"
        },
    )
    near_duplicates: str = field(
        default=str(DEFAULT_THRESHOLD),
        metadata={"help": "perceptual hashes within this many bits (0-16) are near copies"},
    )
    output: Path = field(
        default=Path("leakage-audit"),
        metadata={
            "help": "folder for leakage_audit.json and the contact sheet of the largest groups"
        },
    )
    num_proc: int = field(
        default=2,
        metadata={"help": "processes hashing images (datasets medft prepared store their hashes)"},
    )

    def __post_init__(self) -> None:
        if self.threshold is None:
            raise MedftError("medft audit needs a threshold: --near-duplicates 0-16, not off.")

    @property
    def threshold(self) -> int | None:
        """``near_duplicates`` in bits (None: off)."""
        return parse_threshold(self.near_duplicates)
