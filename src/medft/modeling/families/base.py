"""What a backbone family is to medft (`BackboneFamily`): how a recipe's config, model and
image processor are made, what the processor does to an image, how the model's parameters
are laid out, and what the Trainer, the model card and Grad-CAM need to know of it; where a
recipe's model comes from (`Source`); and the loading both families share (a config from a
Hub id or local folder, one error naming it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from medft.config import ModelArguments
from medft.data.transforms import InputSpec
from medft.errors import MedftError, first_line
from medft.modeling.layout import BlockLayout
from medft.tasks import TaskInfo


@dataclass(frozen=True)
class Source:
    """Where a recipe's model comes from, decided once (`medft.modeling.families`)."""

    family: BackboneFamily
    weights: str | None  # the Hub id or local folder weights load from; None: built here
    config: PretrainedConfig  # as found there, or new: before the recipe's settings


class BackboneFamily(ABC):
    """One library's models: everything medft does differently for transformers' own models
    and for timm's (through TimmWrapper), asked of the family rather than tested for."""

    card_tags: tuple[str, ...] = ()  # the model card's tags for the family

    # which models are the family's -------------------------------------------------------------

    @abstractmethod
    def claims(self, name: str) -> bool:
        """Whether a model_name_or_path is one of the family's own names (a `timm/` name, a
        transformers model type), which `new_config` and `hub_weights` read."""

    @abstractmethod
    def new_config(self, args: ModelArguments) -> PretrainedConfig:
        """The config of a model the family's own name names, built here (random weights, or a
        weights file)."""

    @abstractmethod
    def hub_weights(self, name: str) -> str:
        """The Hub id the pretrained weights of one of the family's own names come from; a
        `MedftError` where it has none."""

    @abstractmethod
    def owns(self, made: Any) -> bool:
        """Whether a config, model or image processor already made is of this family."""

    # a recipe's model --------------------------------------------------------------------------

    @abstractmethod
    def configure(self, args: ModelArguments, source: Source) -> PretrainedConfig:
        """The source's config with the recipe's settings applied, each checked."""

    def set_labels(self, config: PretrainedConfig, task: TaskInfo) -> None:
        """The dataset's labels, replacing any the pretrained config came with."""
        config.num_labels = len(task.label_names)
        config.id2label = task.id2label
        config.label2id = task.label2id
        config.problem_type = task.problem_type

    @abstractmethod
    def build(
        self, args: ModelArguments, config: PretrainedConfig, weights: str | None
    ) -> PreTrainedModel:
        """The model: its weights loaded from ``weights`` (a Hub id or folder), or built here."""

    @abstractmethod
    def processor(self, args: ModelArguments, config: PretrainedConfig, weights: str | None) -> Any:
        """The image processor that feeds the model, as `pipeline()` will run it."""

    # what its processor does -------------------------------------------------------------------

    @abstractmethod
    def input_spec(self, processor: Any) -> InputSpec:
        """The input the processor makes: size, mean, std, resampling, rescale arithmetic."""

    @abstractmethod
    def preprocessing_settings(self, processor: Any) -> dict[str, Any]:
        """The processor's preprocessing as preprocessor.json's settings
        (`medft.inference.preprocessing`); a `MedftError` for a step they cannot describe."""

    @abstractmethod
    def processing_class(self, processor: Any) -> Any | None:
        """What the Trainer saves beside the model as its processor; None where the model's
        config.json carries the preprocessing."""

    # its modules -------------------------------------------------------------------------------

    @abstractmethod
    def block_layout(self, model: PreTrainedModel) -> BlockLayout:
        """The model's parameters as stem, blocks, neck and head."""

    @abstractmethod
    def classifier_name(self, model: PreTrainedModel) -> str:
        """The module name of the layer producing the logits."""

    def probe_layers(self, model: PreTrainedModel) -> list[str]:
        """The module names, in order, that turn the pooled features into the logits (what a
        linear probe trains): the classifier layer alone, unless the family builds an MLP head
        before it."""
        return [self.classifier_name(model)]

    @abstractmethod
    def check_explainable(self, model: PreTrainedModel) -> None:
        """Refuse, before Grad-CAM runs, a model whose feature maps it would misread."""

    def config_licence(self, config: PretrainedConfig) -> str | None:
        """The licence of the weights, where the family's config names it (for the model
        card, when the base model's own card does not); None."""
        return None


def hub_settings(args: ModelArguments) -> dict[str, Any]:
    return {"revision": args.model_revision, "trust_remote_code": args.trust_remote_code}


def load_error(name: str, error: Exception) -> MedftError:
    reason = f"{type(error).__name__}: {first_line(error)}"
    if Path(name).expanduser().is_dir():
        return MedftError(
            f"cannot load the model folder {name} ({reason}): save the model again "
            "(save_pretrained) or download it again."
        )
    return MedftError(
        f"cannot load model '{name}' ({reason}). "
        "Check the name, your network and `hf auth login`; offline, give a local folder "
        "(README: Offline and air-gapped), or use pretrained: false to build it offline."
    )


def loaded_config(name: str, args: ModelArguments, **settings: Any) -> PretrainedConfig:
    """The config.json of a Hub id or local folder (of either family: `AutoConfig` reads
    timm's own too)."""
    try:
        return AutoConfig.from_pretrained(name, **hub_settings(args), **settings)
    except (OSError, ValueError) as error:
        raise load_error(name, error) from None
