"""The record of a model re-fitted on a labelled local sample by `medft calibrate`: which
sample (a dataset's name and split, never a path, and its size) and what changed (the
temperature and the calibration error on the sample before and after, the prior shift per
label, the thresholds, the conformal sets).

Saved as local_fit.json beside the model and shown as the model card's "Local
recalibration" section; `medft evaluate` reads it to warn when it is asked to evaluate the
model on that very sample, which is never an independent test of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medft.errors import MedftError
from medft.evaluation.priors import shift_text

LOCAL_FIT_NAME = "local_fit.json"
SECTION = "## Local recalibration"


@dataclass
class LocalFit:
    """What `medft calibrate` fitted on a local sample, and on which."""

    dataset: str  # its public name
    split: str
    images: int  # the readable images it was fitted on
    temperature: list[float]  # the model's logits as given are divided by it
    ece_before: float  # on the sample, before and after
    ece_after: float
    prior_shift: dict[str, dict[str, float]] | None = None  # `PriorShift.to_json`
    thresholds_before: dict[str, float] | None = None
    thresholds_after: dict[str, float] | None = None
    conformal_alpha: float | None = None

    def changes(self) -> list[str]:
        """What changed, one item each."""
        temperature = ", ".join(f"{value:.3f}" for value in self.temperature[:4])
        more = f", ... ({len(self.temperature)} in all)" if len(self.temperature) > 4 else ""
        items = [
            f"temperature 1 -> {temperature}{more} (the given model's logits divided by it, "
            "folded into the weights); "
            f"expected calibration error on this sample {self.ece_before:.4f} -> "
            f"{self.ece_after:.4f}"
        ]
        if self.prior_shift:
            items.append(
                "prior shift folded into the classifier's bias (label: training -> local "
                f"prevalence, logit shift): {shift_text(self.prior_shift)}"
            )
        if self.thresholds_after:
            before = self.thresholds_before or {}
            items.append(
                "thresholds re-tuned on this sample: "
                + ", ".join(
                    f"{name} {before[name]:.3f} -> {value:.3f}"
                    if name in before
                    else f"{name} {value:.3f}"
                    for name, value in list(self.thresholds_after.items())[:14]
                )
            )
        if self.conformal_alpha is not None:
            items.append(
                f"conformal prediction sets fitted on this sample at alpha "
                f"{self.conformal_alpha:g} (conformal.json)"
            )
        return items

    def sample(self) -> str:
        return f"the {self.split} split of {self.dataset}, {self.images} images"

    def summary(self) -> str:
        """What `medft calibrate` prints: the sample and each change."""
        return "\n".join([f"Fitted on {self.sample()}:", *(f"  {c}" for c in self.changes())])


def fitting_history(folder: Path) -> list[LocalFit]:
    """Every local fit of the model in ``folder``, the first first (none: never re-fitted)."""
    path = Path(folder) / LOCAL_FIT_NAME
    if not path.is_file():
        return []
    try:
        return [LocalFit(**fit) for fit in json.loads(path.read_text())["fits"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MedftError(
            f"{path} is not a {LOCAL_FIT_NAME} written by medft calibrate ({error}); remove it."
        ) from None


def record_fit(folder: Path, fit: LocalFit) -> Path:
    """local_fit.json with ``fit`` after the model's earlier ones (a re-fit acts on top of
    them)."""
    fits = [*fitting_history(folder), fit]
    path = Path(folder) / LOCAL_FIT_NAME
    content = {"fits": [dataclasses.asdict(each) for each in fits]}
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def section(fits: list[LocalFit]) -> str:
    """The model card's section: the last fit's sample and changes, and the earlier samples."""
    last = fits[-1]
    lines = [
        SECTION,
        f"Re-fitted with `medft calibrate` on a labelled local sample: {last.sample()}. The "
        "fitting sample is never the one reported as the test. What changed:",
        "\n".join(f"- {item}" for item in last.changes()),
    ]
    if len(fits) > 1:
        earlier = "; ".join(fit.sample() for fit in fits[:-1])
        lines.append(f"Re-fitted before that on: {earlier}.")
    return "\n\n".join(lines)


def with_section(card_text: str, fits: list[LocalFit]) -> str:
    """A model card with its local recalibration section (replaced, or put before the
    results)."""
    if SECTION in card_text:
        start = card_text.index(SECTION)
        end = card_text.find("\n## ", start + 1)
        card_text = card_text[:start] + card_text[end + 1 :] if end >= 0 else card_text[:start]
    at = card_text.find("## Results on the ")
    at = at if at >= 0 else len(card_text)
    return card_text[:at] + section(fits) + "\n\n" + card_text[at:]


def fitting_warnings(folders: Sequence[Path], dataset: str | None, split: str) -> list[str]:
    """A warning for each model that `medft calibrate` re-fitted on this very split."""
    return [
        f"the {split} split of {dataset} is a local sample {Path(folder).name} was re-fitted "
        "on (medft calibrate): these figures are not an independent test"
        for folder in folders
        if any((fit.dataset, fit.split) == (dataset, split) for fit in fitting_history(folder))
    ]
