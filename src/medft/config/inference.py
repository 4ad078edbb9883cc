"""The options of using a saved model: `medft predict`, `medft explain`, `medft serve` and
`medft export`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medft.config.evaluation import (
    MODELS_HELP,
    ScoringOptions,
    expand_models,
    models_field,
    ood_field,
    tta_field,
)
from medft.config.fields import column_names, columns_field, positional
from medft.errors import MedftError

DEFAULT_TOP_K = 5
DEFAULT_PORT = 7860  # Gradio's, and what Hugging Face Spaces expect
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_FILES = 16  # files one upload to medft serve may hold
DEFAULT_MAX_QUEUE = 8  # requests medft serve holds waiting for the model


def progress_field() -> bool:
    return field(default=True, metadata={"help": "progress bars", "internal": True})


@dataclass(kw_only=True)
class SavedModel:
    model: Path = field(metadata={"help": "a medft train output_dir"})


@dataclass(kw_only=True)
class SavedModels:
    model: list[Path] = models_field()


@dataclass(kw_only=True)
class PredictArguments(ScoringOptions, SavedModels):
    """medft predict: score images with a saved model into a CSV (batched, GPU when present)."""

    model: list[Path] = field(
        metadata={
            "help": MODELS_HELP + "; or a model.onnx from medft export (run by onnxruntime)",
            "repeatable": True,
            "metavar": "MODEL",
        }
    )
    inputs: list[str] = field(
        metadata=positional(
            "image files, folders (searched recursively), or prepared datasets (a folder with "
            "dataset_dict.json; --split picks the split)",
            nargs="+",
            metavar="INPUT",
        )
    )
    output: Path = field(default=Path("predictions.csv"), metadata={"help": "the CSV to write"})
    split: str = field(default="test", metadata={"help": "split of dataset inputs"})
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": "single-label: labels per row"})
    thresholds: Path | None = field(
        default=None,
        metadata={
            "help": "thresholds.json to apply (default: the model folder's, from medft evaluate)"
        },
    )
    precision: Literal["fp32", "bf16", "fp16"] = field(
        default="fp32",
        metadata={
            "help": "fp32 gives the scores pipeline() gives; bf16 / fp16 are faster where "
            "the hardware supports them (bf16: recent Xeon, A100/H100; fp16: GPUs)"
        },
    )

    tta: list[str] = tta_field()
    columns: list[str] | None = columns_field(
        "prepared-dataset inputs: their columns to copy into the CSV, e.g. sex,age_band (file "
        "inputs leave them empty); default: the attributes medft prepare declared for the "
        "dataset; none: no columns"
    )
    ood: bool | None = ood_field()
    progress: bool = progress_field()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.columns = column_names(self.columns, "--columns")
        self.model = expand_models(self.model)
        if self.top_k < 1:
            raise MedftError("--top-k must be at least 1.")
        models = [given for given in self.inputs if (Path(given) / "config.json").is_file()]
        if models:
            raise MedftError(
                f"{models[0]} is a model folder, not images: give several models as --model A "
                "--model B, or as a quoted pattern: --model 'cv/fold-*'."
            )


@dataclass(kw_only=True)
class ExplainArguments(SavedModel):
    """medft explain: saliency maps (Grad-CAM) of a saved model's predictions, one PNG each."""

    images: list[str] = field(
        metadata=positional("image files or folders", nargs="+", metavar="IMAGE")
    )
    output: Path = field(metadata={"help": "folder for the PNGs"})
    target: str | None = field(
        default=None, metadata={"help": "label to explain (default: the top prediction)"}
    )
    top_k: int = field(default=DEFAULT_TOP_K, metadata={"help": "scores shown per image"})
    split: str = field(default="test", metadata={"help": "split of dataset inputs"})
    progress: bool = progress_field()


@dataclass(kw_only=True)
class ServeArguments:
    """medft serve: a web page (Gradio) that classifies uploaded images with a saved model."""

    model: str = field(
        metadata={
            "help": "a medft train output_dir, or a Hub model id (downloaded; with "
            "--write-space, the Hub model the Space serves)"
        }
    )
    port: int = field(default=DEFAULT_PORT, metadata={"help": "local port to serve on"})
    share: bool = field(
        default=False,
        metadata={
            "help": "also serve through a temporary public gradio.live link (needs "
            "internet; anyone with the link can upload images)"
        },
    )
    max_upload_mb: float = field(
        default=DEFAULT_MAX_UPLOAD_MB, metadata={"help": "largest file accepted, in MB"}
    )
    max_files: int = field(
        default=DEFAULT_MAX_FILES,
        metadata={"help": "files classified per upload; the page lists any more as not classified"},
    )
    max_queue: int = field(
        default=DEFAULT_MAX_QUEUE,
        metadata={"help": "requests waiting for the model at once; the page turns more away"},
    )
    write_space: Path | None = field(
        default=None,
        metadata={
            "help": "write app.py, requirements.txt and README.md of a Hugging Face "
            "Space serving the Hub model --model into this folder, instead of serving",
            "metavar": "DIR",
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise MedftError(f"--port must be between 1 and 65535, got {self.port}.")
        if self.max_upload_mb <= 0:
            raise MedftError(f"--max-upload-mb must be positive, got {self.max_upload_mb}.")
        for name in ("max_files", "max_queue"):
            if getattr(self, name) < 1:
                raise MedftError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}."
                )


@dataclass(kw_only=True)
class ExportArguments(ScoringOptions, SavedModel):
    """medft export: a saved model as ONNX, with its preprocessing (preprocessor.json) beside
    it, checked against PyTorch."""

    format: Literal["onnx"] = field(default="onnx", metadata={"help": "the format to write"})
    output: Path = field(
        default=Path("model.onnx"),
        metadata={"help": "the .onnx file; preprocessor.json is written beside it"},
    )
    quantize: Literal["dynamic"] | None = field(
        default=None,
        metadata={
            "help": "dynamic: write onnxruntime's int8 dynamic quantization instead of "
            "fp32 (smaller, often faster on CPUs; --dataset shows what it costs)"
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "a prepared dataset: check parity on its images, and compare the "
            "split's headline metrics for PyTorch and the export"
        },
    )
    split: str = field(default="test", metadata={"help": "split of --dataset"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.output.suffix != ".onnx":
            raise MedftError(f"--output {self.output} must end in .onnx.")
