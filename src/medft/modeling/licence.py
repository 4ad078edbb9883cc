"""The licence of the weights a model is fine-tuned from, which its model card carries.

Read from the base model's own card, the `license`, `license_name` and `license_link` of its
README.md front matter (and whether the Hub gates it: `extra_gated_*` keys), in its local
folder or Hub repository; else from its config where the family keeps one there
(`BackboneFamily.config_licence`: timm's `pretrained_cfg`). None where neither says, and for
random weights or a weights file. A link is kept only where it is a web address (a relative
link of a Hub repository made one); never a local path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import hf_hub_download, metadata_load

from medft.config import ModelArguments
from medft.modeling.families import weights_source

CARD_NAME = "README.md"
GATED_KEYS = "extra_gated_"  # the front matter keys of a repository the Hub gates
OTHER = "other"  # the Hub's licence id for a licence of its own, named by license_name
# the Hub licence ids that timm's pretrained configs name; any other name is a licence of its own
HUB_LICENCE_IDS = (
    "apache-2.0", "mit", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
)  # fmt: skip


@dataclass(frozen=True)
class BaseLicence:
    """A base model's licence, as a model card's front matter gives it."""

    license: str  # a Hub licence id, or "other" (a licence of its own, named by license_name)
    license_name: str | None = None
    license_link: str | None = None  # a web address
    gated: bool = False  # the Hub shares the weights only with those who accept its terms

    @property
    def name(self) -> str:
        return self.license_name or self.license

    @property
    def own_terms(self) -> bool:
        """A licence of its own rather than one of the Hub's standard licences."""
        return self.license == OTHER

    def card_data(self) -> dict[str, str]:
        """The front matter keys a card derived from the base model carries."""
        keys = {
            "license": self.license,
            "license_name": self.license_name,
            "license_link": self.license_link,
        }
        return {key: value for key, value in keys.items() if value}


def web_link(link: Any, hub_id: str | None) -> str | None:
    """``link`` where it is a web address, or a relative link within the Hub repository
    ``hub_id`` (made absolute); None otherwise (a local folder's relative link)."""
    if not isinstance(link, str) or not link.strip():
        return None
    if link.startswith(("https://", "http://")):
        return link
    if hub_id and "://" not in link:
        return f"https://huggingface.co/{hub_id}/blob/main/{link.removeprefix('./')}"
    return None


def from_front_matter(data: dict[str, Any], hub_id: str | None) -> BaseLicence | None:
    """The licence a card's front matter gives; None when it names none."""
    licence = data.get("license")
    if not isinstance(licence, str) or not licence:
        return None
    name = data.get("license_name") if licence == OTHER else None
    return BaseLicence(
        license=licence,
        license_name=str(name) if name else None,
        license_link=web_link(data.get("license_link"), hub_id),
        gated=any(str(key).startswith(GATED_KEYS) for key in data),
    )


def from_config(licence: str) -> BaseLicence:
    """A licence a config names: a Hub licence id, else a licence of its own by that name."""
    if licence in HUB_LICENCE_IDS:
        return BaseLicence(licence)
    return BaseLicence(OTHER, license_name=licence)


def card_front_matter(source: str, args: ModelArguments) -> dict[str, Any] | None:
    """The front matter of the card beside the weights: a local folder's README.md, or the Hub
    repository's (from the cache when offline); None where there is none or it cannot be read."""
    folder = Path(source).expanduser()
    try:
        if folder.is_dir():
            path = folder / CARD_NAME
            return metadata_load(path) if path.is_file() else None
        return metadata_load(hf_hub_download(source, CARD_NAME, revision=args.model_revision))
    # no card, no network, a gated or missing repository, front matter that is not YAML
    except (OSError, ValueError, yaml.YAMLError):
        return None


def base_licence(args: ModelArguments, config_licence: str | None) -> BaseLicence | None:
    """The licence of the weights the recipe's model starts from: its card's, else the one its
    config names (``config_licence``); None when neither says or no weights are loaded."""
    source = weights_source(args)
    if source is None:
        return None
    hub_id = None if Path(source).expanduser().is_dir() else source
    front = card_front_matter(source, args)
    licence = from_front_matter(front, hub_id) if front else None
    if licence is None and config_licence:
        return from_config(config_licence)
    return licence
