"""`medft serve`: a web page (Gradio) that classifies uploaded images with a saved model.

Each uploaded file is read once, as `medft predict` reads it (`ImageReader`, under
medft's pixel budget), and that one image gives the model's pixels, scored in one batch
with the thresholds beside the model, and the picture the gallery shows (or its
Grad-CAM, from `medft explain`'s `Explainer`). Each image gets the task's verdict and
table: the top labels, the binary decision at its threshold, or every finding with its
threshold and whether it is reached; its conformal prediction set when the model has
conformal.json; an image unlike the model's training images (by the statistics saved with
it: `medft.inference.ood`) gets a line saying so. The page shows the model card's intended
use and the not-for-clinical-use notice. A file that is not an image, is empty, is over the
pixel budget, or is one more than an upload may hold gets a line on the page saying so, and
the server goes on; requests beyond a bounded queue are turned away.

Images and results stay on the server and the user's screen: Gradio's analytics, run
history, MCP server and monitoring endpoint are off. `medft serve` gives Gradio a
private temporary folder (`medft.private_folder`, mode 0700) for uploads and the
gallery's pictures; each uploaded file is deleted as soon as it has been read, the
decoded images stay in the session's memory only (for the Grad-CAM toggle, at most
`UPLOAD_LIFETIME`), the gallery's pictures are deleted once that old, and the folder is
removed when the server stops. `medft.commands.space` writes the three files of a
Hugging Face Space that serves a Hub model with this same page.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from gradio.utils import get_upload_folder, is_in_or_equal
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from PIL import Image

from medft.commands.explain import Explainer
from medft.config.evaluation import DEFAULT_BATCH_SIZE
from medft.config.inference import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_TOP_K,
    ServeArguments,
)
from medft.errors import MedftError, first_line
from medft.evaluation.card import INTENDED_USE, NOT_FOR_CLINICAL_USE
from medft.evaluation.conformal import ConformalSets
from medft.evaluation.thresholds import fixed_thresholds
from medft.inference.classifier import Classifier, load_classifier, stored_thresholds
from medft.inference.ood import UNLIKE_TRAINING, OodScorer, OodStatistics
from medft.inference.reading import ImageReader, short_reason
from medft.inference.scoring import score_images
from medft.tasks import DEFAULT_THRESHOLD

UPLOAD_LIFETIME = 600  # seconds an upload's images stay in the session, and its pictures on disk
GALLERY_SIDE = 1024  # the gallery shows each image at most this many pixels a side
# Sessions whose state (their last upload's images, ~3.6 MB a file) is kept, the least
# recently used dropped first: with 16-file uploads at most ~1.9 GB, whatever the traffic.
SESSIONS_KEPT = 32
MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")
UPLOAD_PROMPT = "Upload one or more images (PNG, JPEG, DICOM)."


@dataclass
class ServedModel:
    """What the page serves: the classifier, its thresholds, and what its card says."""

    classifier: Classifier
    name: str
    thresholds: dict[str, float]
    threshold_source: str
    notice: str  # Markdown: the not-for-clinical-use notice and the intended use
    sets: ConformalSets | None = None  # the model's conformal prediction sets, if any
    ood: OodStatistics | None = None  # None: a model folder saved without them


def model_folder(model: str | Path) -> Path:
    """A local model folder as it is; a Hub model id downloaded (or read from the cache)."""
    path = Path(model).expanduser()
    if path.suffix == ".onnx":
        raise MedftError(
            f"--model {model}: medft serve needs the PyTorch model folder (Grad-CAM "
            "needs gradients); give the folder the ONNX file was exported from."
        )
    if path.is_dir():
        return path
    if str(model).startswith((".", "/", "~")) or str(model).count("/") != 1:
        raise MedftError(
            f"--model {model} is not a folder; give a medft train output_dir or a "
            "Hub model id (user/name)."
        )
    try:
        return Path(snapshot_download(repo_id=str(model), repo_type="model"))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise MedftError(
            f"--model {model} is not a local folder, and the Hub model could not be downloaded "
            f"({type(error).__name__}: {first_line(error, 200)}); check the id, the network, "
            "and for a private model the HF_TOKEN environment variable."
        ) from None


def card_notice(folder: Path) -> str:
    """The model card's not-for-clinical-use notice and intended-use section, as Markdown;
    medft's notice where the card has none (or there is no card)."""
    card = folder / "README.md"
    text = card.read_text(errors="replace") if card.is_file() else ""
    sections = re.split(r"\n(?=## )", text)
    intended = next((s.strip() for s in sections if s.startswith(INTENDED_USE)), None)
    notice = next((line for line in text.splitlines() if "**Not for clinical use.**" in line), None)
    return "\n\n".join(
        [
            notice or NOT_FOR_CLINICAL_USE,
            intended.replace(INTENDED_USE, "### Intended use and limitations", 1)
            if intended
            else f"*{folder.name} has no model card stating its intended use.*",
        ]
    )


def load_served_model(model: str | Path) -> ServedModel:
    """The model to serve (a local folder or a Hub model id), with its thresholds, notice and
    out-of-distribution statistics (if its folder has them)."""
    folder = model_folder(model)
    classifier = load_classifier(folder)
    task = classifier.task
    stored = stored_thresholds(classifier, None)
    if stored is None and task.thresholded_labels:
        stored = fixed_thresholds(task, DEFAULT_THRESHOLD, "default")
    source = ""
    if stored:
        source = (
            f"thresholds {stored.method}, tuned on {stored.tuned_on}"
            if stored.tuned_on
            else "thresholds 0.5: the model folder has no thresholds.json"
        )
    values = stored.values if stored else {}
    name, notice = Path(str(model)).name, card_notice(folder)
    sets = classifier.saved_conformal()
    return ServedModel(classifier, name, values, source, notice, sets, OodStatistics.load(folder))


# the page's answer to an upload ----------------------------------------------------------------


def escaped(text: str) -> str:
    """``text`` shown literally in Markdown (file names and labels come from users)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def ood_line(served: ServedModel, distance: float) -> list[str]:
    """An image's out-of-distribution flag, when it is flagged (NaN: not scored)."""
    if served.ood is not None and distance > served.ood.threshold:
        return [
            f"**⚠ {UNLIKE_TRAINING}** (out-of-distribution score {distance:.2f}, above "
            f"{served.ood.threshold:.2f})",
            "",
        ]
    return []


def image_section(served: ServedModel, name: str, scores: Any, distance: float) -> str:
    task = served.classifier.task
    verdict, columns, rows = task.shown(scores, served.thresholds, DEFAULT_TOP_K)
    table = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(escaped(cell) for cell in row) + " |" for row in rows),
    ]
    lines = [f"#### {escaped(name)}", f"**{escaped(verdict)}**"]
    if served.sets is not None:
        in_set = task.set_text(served.sets.included(task, scores[None])[0])
        lines.append(f"Prediction set ({served.sets.coverage:.0%} coverage): {escaped(in_set)}")
    return "\n".join([*lines, "", *ood_line(served, distance), *table])


@dataclass
class ReadImage:
    """One uploaded file, read once: the picture the gallery shows and the model's input."""

    name: str
    picture: Image.Image  # the image as read, at most GALLERY_SIDE a side
    pixels: torch.Tensor  # as the model's processor made them: scored, and explained


@dataclass
class Upload:
    """What the page keeps of one upload, in the session's memory: its results, and each
    readable image (to redraw the gallery with or without Grad-CAM)."""

    text: str
    images: list[ReadImage] = field(default_factory=list)


def discard_upload(path: Path) -> None:
    """Delete an uploaded file, and its folder once empty; files outside Gradio's upload
    folder are the caller's and stay."""
    if is_in_or_equal(path, get_upload_folder()):
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def read_upload(reader: ImageReader, index: int, name: str) -> ReadImage:
    image = reader.open(index)
    pixels = reader.pixels(image)
    image.thumbnail((GALLERY_SIDE, GALLERY_SIDE))
    return ReadImage(name, image, pixels)


def read_uploads(
    classifier: Classifier, paths: list[Path], max_files: int
) -> tuple[dict[int, ReadImage], dict[int, str]]:
    """Each of the first ``max_files`` files read once, by index, and why the others are not
    classified; every upload is deleted as soon as it has been read (or refused)."""
    reader = ImageReader(classifier, paths)
    read, refused = {}, {}
    try:
        for index, path in enumerate(paths):
            if index >= max_files:
                refused[index] = f"over the limit of {max_files} files per upload; upload it again"
            elif not path.stat().st_size:
                refused[index] = "the file is empty"
            else:
                try:
                    read[index] = read_upload(reader, index, path.name)
                except Exception as error:  # any failure to decode or preprocess it: said
                    reason = short_reason(error).replace(str(path), path.name)
                    refused[index] = f"not readable as an image ({reason})"
            discard_upload(path)
    finally:  # all of them, also after a failure
        for path in paths:
            discard_upload(path)
    return read, refused


def classify(
    served: ServedModel, files: list[str] | None, max_files: int = DEFAULT_MAX_FILES
) -> Upload:
    """The uploaded ``files`` read once and scored in one batch: the results as Markdown
    (what could not be read, then each image's verdict and table) and the images read."""
    paths = [Path(file) for file in files or []]
    if not paths:
        return Upload(UPLOAD_PROMPT)
    read, refused = read_uploads(served.classifier, paths, max_files)
    images = list(read.values())
    batch = [(i, image.pixels, None) for i, image in enumerate(images)]
    ood = OodScorer(served.classifier, served.ood) if served.ood else None
    probs, _ = score_images(
        served.classifier,
        batch,
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=0,
        progress=False,
        features=ood,
    )
    distances = ood.values(len(images)) if ood else np.full(len(images), np.nan)
    header = f"{len(read)} of {len(paths)} file(s) classified"
    if served.threshold_source:
        header += f" ({escaped(served.threshold_source)})"
    if served.sets is not None:
        header += f"; prediction sets: {escaped(served.sets.describe())}"
    sections = [
        image_section(served, image.name, p, d) for image, p, d in zip(images, probs, distances)
    ]
    problems = [
        f"- **{escaped(paths[i].name)}**: {escaped(reason)}"
        for i, reason in sorted(refused.items())
    ]
    if problems:
        sections.insert(0, "**Not classified:**\n" + "\n".join(problems))
    return Upload("\n\n".join([header, *sections]), images)


def gallery(served: ServedModel, upload: Upload | None, show_cam: bool) -> list[tuple[Any, str]]:
    """The upload's images as read, or their Grad-CAM overlays, with captions."""
    if upload is None:
        return []
    if not show_cam:
        return [(image.picture, image.name) for image in upload.images]
    with Explainer(served.classifier) as explainer:
        shown = [(explainer(image.pixels[None]), image.name) for image in upload.images]
    return [(cam.overlay, f"{name}: Grad-CAM for {cam.explained}") for cam, name in shown]


def answer(served: ServedModel, max_files: int = DEFAULT_MAX_FILES):
    """The upload handler: `classify` and the `gallery`, and the upload kept in the session;
    anything unexpected is shown on the page, not raised."""

    def handle(files: list[str] | None, show_cam: bool) -> tuple[str, list, Upload | None]:
        try:
            upload = classify(served, files, max_files)
            return upload.text, gallery(served, upload, show_cam), upload
        except Exception as error:  # the page reports it and the server goes on
            return f"**Could not classify these files**: {escaped(first_line(error))}", [], None

    return handle


def redraw(served: ServedModel):
    """The Grad-CAM toggle's handler: the `gallery` of the upload the session kept; a failure
    is a message on the page."""

    def handle(show_cam: bool, upload: Upload | None) -> list[tuple[Any, str]]:
        try:
            return gallery(served, upload, show_cam)
        except Exception as error:
            raise gr.Error(f"Could not draw these images: {first_line(error)}") from None

    return handle


# the page ---------------------------------------------------------------------------------------


def build_app(served: ServedModel, max_files: int = DEFAULT_MAX_FILES) -> gr.Blocks:
    """The page: upload, Grad-CAM toggle, results, images, and the model card's notice."""
    task = served.classifier.task
    labels = ", ".join(task.label_names[:20]) + (" ..." if len(task.label_names) > 20 else "")
    with gr.Blocks(
        title=f"{served.name} · medft",
        analytics_enabled=False,
        delete_cache=(UPLOAD_LIFETIME, UPLOAD_LIFETIME),  # pictures deleted 10-20 minutes on
    ) as app:
        gr.Markdown(f"## {escaped(served.name)}\n{task.describe()}: {escaped(labels)}")
        gr.Markdown(served.notice, elem_id="notice")
        upload = gr.State(time_to_live=UPLOAD_LIFETIME)
        with gr.Row():
            with gr.Column():
                files = gr.File(
                    label=f"Images (PNG, JPEG, DICOM; up to {max_files} at a time)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="upload",
                )
                show_cam = gr.Checkbox(label="Show Grad-CAM overlay", elem_id="grad-cam")
                images = gr.Gallery(label="Images", columns=3, height="auto", elem_id="gallery")
            results = gr.Markdown(UPLOAD_PROMPT, elem_id="results")
        # one model, and Grad-CAM's hooks on it: one request at a time, of either kind
        files.change(
            answer(served, max_files),
            inputs=[files, show_cam],
            outputs=[results, images, upload],
            api_name="classify",
            concurrency_limit=1,
            concurrency_id="model",
        )
        show_cam.change(
            redraw(served),
            inputs=[show_cam, upload],
            outputs=images,
            api_name="gallery",
            concurrency_limit=1,
            concurrency_id="model",
        )
    return app


def launch(
    app: gr.Blocks,
    port: int | None = None,
    share: bool = False,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_queue: int = DEFAULT_MAX_QUEUE,
    **settings: Any,
):
    """Serve the page (port None: $GRADIO_SERVER_PORT or 7860), with nothing sent elsewhere;
    Gradio refuses larger uploads, and requests beyond ``max_queue`` waiting, with a message
    on the page, and keeps the state of the `SESSIONS_KEPT` sessions used last."""
    return app.queue(max_size=max_queue).launch(
        server_port=port,
        share=share,
        max_file_size=int(max_upload_mb * 1e6),
        state_session_capacity=SESSIONS_KEPT,
        run_history=False,
        mcp_server=False,
        enable_monitoring=False,
        ssr_mode=False,
        footer_links=[],
        **settings,
    )


def serve(options: ServeArguments) -> None:
    """`medft serve`: the page for ``model`` on http://127.0.0.1:``port`` until interrupted
    (the command runs it in a private temporary folder: `medft.private_folder`)."""
    app = build_app(load_served_model(options.model), options.max_files)
    launch(app, options.port, options.share, options.max_upload_mb, options.max_queue)
