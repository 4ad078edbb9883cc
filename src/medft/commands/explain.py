"""Saliency maps for `medft explain`: which parts of an image drove a prediction.

Grad-CAM from pytorch-grad-cam. For CNNs it weighs the last feature map that is
still a spatial grid; for vision transformers it weighs the patch tokens going
into the last block's attention (the block's first norm; class and register
tokens dropped, the rest laid back on the patch grid), the recipe
pytorch-grad-cam gives for ViTs: later layers' patch tokens get no gradient,
since only the class token reaches the head. Both families are handled (transformers
models, and timm models through TimmWrapper); the layers are found from the
forward pass and the family's block layout, not from per-model names.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from medft.config.inference import DEFAULT_TOP_K, ExplainArguments
from medft.data.transforms import to_picture
from medft.errors import MedftError
from medft.evaluation.plots import plot_explanation
from medft.inference.classifier import Classifier, LogitsOnly, load_classifier
from medft.inference.inputs import collect_inputs
from medft.inference.reading import ImageReader, short_reason
from medft.modeling.families import family_of
from medft.modeling.layout import module_prefix
from medft.progress import progress_bar


@dataclass
class CamLayer:
    """Where Grad-CAM looks: the layer, its name, and how its output becomes (B, C, H, W)."""

    module: nn.Module
    name: str
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def description(self) -> str:
        grid = "the patch-token grid of " if self.reshape else ""
        return f"Grad-CAM on {grid}{self.name}"


def output_shapes(model: nn.Module, pixel_values: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Module name -> output shape, in the order the modules' forward passes finish (for a
    module returning a tuple, its first tensor's shape)."""
    finished: dict[str, tuple[int, ...]] = {}

    def record(name: str, output) -> None:
        if isinstance(output, (tuple, list)) and output:
            output = output[0]
        if isinstance(output, torch.Tensor):
            finished.pop(name, None)  # a module run twice counts where it last finished
            finished[name] = tuple(output.shape)

    hooks = [
        module.register_forward_hook(lambda _m, _i, output, name=name: record(name, output))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for hook in hooks:
            hook.remove()
    return finished


def last_block(model: nn.Module) -> str:
    """The module name of the model's last block (medft's block layout; timm groups the last
    block with the final norm, so its name follows the block before it)."""
    blocks = family_of(model).block_layout(model).blocks
    if len(blocks) == 1:
        return module_prefix(blocks[0][1])
    depth = len(module_prefix(blocks[-2][1]).split("."))
    return ".".join(blocks[-1][1][0].split(".")[:depth])


def token_grid(tokens: int, grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, tokens, C) -> (B, C, height, width), dropping the leading class / register tokens."""
    height, width = grid
    prefix = tokens - height * width

    def reshape(output: torch.Tensor) -> torch.Tensor:
        patches = output[:, prefix:, :]
        return patches.reshape(output.size(0), height, width, -1).permute(0, 3, 1, 2)

    return reshape


def patch_grid(shape: tuple[int, ...], tokens: int) -> tuple[int, int] | None:
    """The patch grid of a feature map laid out channels first (B, C, H, W) or last (B, H, W,
    C, as timm's EVA-based ViTs such as DINOv3 embed patches): of the two readings, the
    larger grid the ``tokens`` cover; None when neither fits."""
    readings = [tuple(shape[2:4]), tuple(shape[1:3])]
    fitting = [grid for grid in readings if grid[0] * grid[1] <= tokens]
    return max(fitting, key=lambda grid: grid[0] * grid[1]) if fitting else None


def is_spatial(shape: tuple[int, ...]) -> bool:
    """A (B, C, H, W) feature map larger than 1x1."""
    return len(shape) == 4 and min(shape[2:]) > 1


def cam_layer(model: nn.Module, pixel_values: torch.Tensor) -> CamLayer:
    """The layer to explain: the last block's first norm for ViT-like models (tokens), else
    the last module whose output is still a spatial map larger than 1x1 (CNNs)."""
    family_of(model).check_explainable(model)
    shapes = output_shapes(model, pixel_values)
    block = last_block(model)
    if len(shapes.get(block, ())) == 3:  # tokens: (B, N, C)
        norms = [
            name
            for name, module in model.get_submodule(block).named_modules()
            if isinstance(module, nn.LayerNorm)
        ]
        name = f"{block}.{norms[0]}" if norms else None
        # the patch grid: the last feature map before the image became tokens
        order = list(shapes)
        first_tokens = next(i for i, n in enumerate(order) if len(shapes[n]) == 3)
        maps = [shapes[n] for n in order[:first_tokens] if is_spatial(shapes[n])]
        if name is None or not maps:
            raise MedftError(f"cannot find the patch grid of {type(model).__name__} to explain.")
        tokens = shapes[name][1]
        grid = patch_grid(maps[-1], tokens)
        if grid is None:
            height, width = maps[-1][2:4]
            raise MedftError(
                f"{type(model).__name__}: {tokens} tokens do not cover the {height}x{width} "
                "patch grid (windowed or merged tokens); explain supports ViT-like models and CNNs."
            )
        return CamLayer(model.get_submodule(name), name, token_grid(tokens, grid))
    spatial = [name for name, shape in shapes.items() if is_spatial(shape)]
    if not spatial:
        raise MedftError(f"{type(model).__name__} has no spatial feature map to explain.")
    return CamLayer(model.get_submodule(spatial[-1]), spatial[-1])


def file_stem(name: str, taken: Counter[str]) -> str:
    """A file name for an image's explanation, unique within one run."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name.rsplit(":", 1)[-1]).stem) or "image"
    taken[stem] += 1
    return stem if taken[stem] == 1 else f"{stem}_{taken[stem]}"


@dataclass
class ExplainSummary:
    method: str = ""
    written: list[Path] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # image -> reason


@dataclass
class Explanation:
    """One image explained: the heat map over what the model saw, its top scores, and the
    label explained."""

    overlay: np.ndarray  # (H, W, 3) uint8
    scores: list[tuple[str, float]]
    explained: str


class Explainer:
    """Grad-CAM of one classifier's predictions (`medft explain` and `medft serve`): the layer
    is found on the first image; `close()` (or leaving a ``with`` block) takes
    pytorch-grad-cam's hooks off the model."""

    def __init__(
        self, classifier: Classifier, target: str | None = None, top_k: int = DEFAULT_TOP_K
    ) -> None:
        labels = classifier.task.label_names
        if target is not None and target not in labels:
            raise MedftError(
                f"--target '{target}' is not a label of this model ({', '.join(labels)})."
            )
        self.classifier, self.target, self.top_k = classifier, target, top_k
        self.cam: GradCAM | None = None
        self.method = ""

    def __call__(self, pixels: torch.Tensor) -> Explanation:
        """Explain one image's (1, C, H, W) pixels, as the model's processor made them."""
        classifier = self.classifier
        if self.cam is None:
            layer = cam_layer(classifier.model, pixels.to(classifier.device))
            self.method = layer.description
            self.cam = GradCAM(LogitsOnly(classifier.model), [layer.module], layer.reshape)
        labels = classifier.task.label_names
        target = self.target
        targets = [ClassifierOutputTarget(labels.index(target))] if target else None  # None: top
        heat = self.cam(input_tensor=pixels, targets=targets)[0]
        logits = self.cam.outputs.detach().float().cpu().numpy()  # the pass Grad-CAM just ran
        scores = classifier.task.probabilities(logits)[0]
        spec = family_of(classifier.processor).input_spec(classifier.processor)
        seen = to_picture(pixels[0], spec)
        overlay = show_cam_on_image(seen, heat, use_rgb=True)
        top = np.argsort(-scores, kind="stable")[: self.top_k]
        return Explanation(
            overlay,
            [(labels[i], float(scores[i])) for i in top],
            target or labels[int(np.argmax(logits[0]))],
        )

    def close(self) -> None:
        if self.cam is not None:
            self.cam.activations_and_grads.release()
            self.cam = None

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def explain(options: ExplainArguments) -> ExplainSummary:
    """One PNG per image in ``output``: the image, the saliency map for ``target`` (default:
    the top prediction) over what the model saw, and the top-k labels and scores."""
    classifier = load_classifier(options.model)
    with Explainer(classifier, options.target, options.top_k) as explainer:
        found = collect_inputs(options.images, options.split, classifier.dicom)
        reader = ImageReader(classifier, found.files, found.splits, found.frames)
        output = Path(options.output)
        output.mkdir(parents=True, exist_ok=True)
        summary, taken = ExplainSummary(), Counter()
        names = progress_bar(found.names, desc="explaining", disable=not options.progress)
        for index, name in enumerate(names):
            try:
                image = reader.open(index)
                pixels = reader.pixels(image)[None]
            except Exception as error:  # an unreadable file is reported, and the run goes on
                summary.errors[name] = short_reason(error)
                continue
            shown = explainer(pixels)
            summary.method = explainer.method
            path = output / f"{file_stem(name, taken)}.png"
            title = f"{name}\n{summary.method}"
            summary.written.append(
                plot_explanation(image, shown.overlay, shown.scores, shown.explained, title, path)
            )
    return summary


def format_explain_summary(summary: ExplainSummary, output: str | Path) -> str:
    lines = [
        f"Explained {len(summary.written)} image(s) ({summary.method or 'no readable image'}).",
        f"unreadable: {len(summary.errors)}",
        *(f"  {name}: {reason}" for name, reason in summary.errors.items()),
        f"Wrote one PNG per image to {output}",
    ]
    return "\n".join(lines)
