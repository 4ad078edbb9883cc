"""medft: fine-tune image classifiers for medical imaging on the Hugging Face stack."""

from typing import Any

from medft.errors import MedftError
from medft.version import __version__

__all__ = ["MedftError", "__version__", "load_image"]


def __getattr__(name: str) -> Any:
    """`medft.load_image`, imported on first use (it needs torch and transformers, which
    `medft --help` should not wait for)."""
    if name == "load_image":
        from medft.inference.reading import load_image

        return load_image
    raise AttributeError(f"module 'medft' has no attribute {name!r}")
