"""What the model card says of the base model: the licence its weights come under, said
plainly where it restricts use or the Hub gates the weights, and the preprocessing the saved
image processor runs (the base model's own, which `pipeline()` repeats)."""

from __future__ import annotations

from typing import Any

from medft.errors import MedftError
from medft.modeling.families import BackboneFamily
from medft.modeling.licence import BaseLicence

LICENCE_HEADING = "## Licence of the base model"
# licences of their own that allow no commercial use, in words
NON_COMMERCIAL = {"msrla": "the Microsoft Research License Agreement: research use only"}
NON_COMMERCIAL_MARK = "-nc"  # Creative Commons' non-commercial licences: cc-by-nc-4.0, ...


def non_commercial(licence: BaseLicence) -> bool:
    return licence.name in NON_COMMERCIAL or NON_COMMERCIAL_MARK in licence.name


def licence_lines(licence: BaseLicence) -> list[str]:
    """The licence, that it binds this model too, and what restricts it, plainly."""
    named = f"`{licence.name}`"
    if licence.license_link:
        named = f"[{named}]({licence.license_link})"
    lines = [
        f"The base model's weights come under {named}. This model is fine-tuned from them: its "
        "use and sharing are bound by the same terms."
    ]
    if non_commercial(licence):
        words = NON_COMMERCIAL.get(licence.name, "a non-commercial licence")
        lines.append(
            f"**Non-commercial use only.** `{licence.name}` ({words}) does not allow commercial "
            "use, of the base model or of this model."
        )
    elif licence.own_terms:
        lines.append(
            f"**Terms of its own.** `{licence.name}` is not a standard open licence: read its "
            "terms before using or sharing this model."
        )
    if licence.gated:
        lines.append(
            "**Gated.** The Hub shares the base model only with those who accept its terms; "
            "this model carries its weights, so share it under the same conditions (a gated "
            "repository)."
        )
    return lines


def preprocessing_text(settings: dict[str, Any]) -> str:
    """A processor's steps (preprocessor.json's settings) in words."""
    steps = []
    resize, crop = settings.get("resize"), settings.get("crop")
    how = settings.get("interpolation", "bilinear")
    if resize and "shortest_edge" in resize:
        steps.append(f"the shorter side resized to {resize['shortest_edge']} px ({how})")
    elif resize:
        steps.append(f"resized to {resize['height']}x{resize['width']} ({how})")
    if crop:
        steps.append(f"centre-cropped to {crop['height']}x{crop['width']}")
    if settings["rescale_factor"] != 1.0:
        steps.append("scaled to [0, 1]")
    mean = ", ".join(f"{value:.4g}" for value in settings["mean"])
    std = ", ".join(f"{value:.4g}" for value in settings["std"])
    steps.append(f"normalised with mean ({mean}) and std ({std})")
    return ", ".join(steps)


def processor_settings(family: BackboneFamily, processor: Any) -> dict[str, Any] | None:
    """The processor's steps as preprocessor.json's settings; None for a processor they cannot
    describe (which `medft export` refuses too)."""
    try:
        return family.preprocessing_settings(processor)
    except MedftError:
        return None


def licence_section(licence: BaseLicence | None) -> list[str]:
    """The card's section on the base model's licence; none when no licence is known."""
    return [LICENCE_HEADING, *licence_lines(licence)] if licence else []


def preprocessing_lines(settings: dict[str, Any] | None) -> list[str]:
    """The saved processor's steps, for the card's data section; none when not describable."""
    if not settings:
        return []
    return [
        "Preprocessing (the saved image processor, which `pipeline()` runs): "
        f"{preprocessing_text(settings)}."
    ]
