"""medft: fine-tune image classifiers for medical imaging on the Hugging Face stack."""

from medft.errors import MedftError

__version__ = "0.1.0"

__all__ = ["MedftError", "__version__"]
