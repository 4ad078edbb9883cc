"""What a single-label task gives conformal prediction sets and a prior shift, mixed into
`TaskInfo`: the states a set is made of (the classes, exactly one true), their
probabilities, which are true, a set in words, and the logit offset for a site's
prevalence. `MultilabelTask` overrides them with a finding's two states.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class SingleLabelSets:
    """The classes as a prediction set's states; ``label_names`` is the task's."""

    label_names: list[str]

    conformal_method: ClassVar[str] = (
        "class-conditional (Mondrian) split conformal: per class, nonconformity 1 - p of the "
        "class, calibrated on the images of that class"
    )

    @property
    def conformal_states(self) -> list[str]:
        """What a conformal prediction set is made of: the classes, one of which is true."""
        return list(self.label_names)

    @property
    def state_groups(self) -> list[str]:
        """Each state's group, of which exactly one state is true: here one, the classes."""
        return ["classes"] * len(self.label_names)

    def state_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """Each state's probability, (images, states): the classes'."""
        return np.asarray(probs, dtype=np.float64)

    def true_states(self, labels: np.ndarray) -> np.ndarray:
        """Which states are true, (images, states): each image's class."""
        return np.eye(len(self.label_names), dtype=bool)[np.asarray(labels, dtype=int)]

    def set_text(self, included: np.ndarray) -> str:
        """One image's prediction set (a bool per state) in words: its classes, joined by |."""
        return "|".join(name for name, inside in zip(self.label_names, included) if inside)

    def prior_shift(self, training: np.ndarray, local: np.ndarray) -> np.ndarray:
        """What to add to the logits for a site whose label prevalence is ``local`` instead of
        ``training``: log(local / training) per class (Saerens et al. 2002; the softmax
        renormalises)."""
        return np.log(local) - np.log(training)
