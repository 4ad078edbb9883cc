"""`medft serve`: a web page (Gradio) that classifies uploaded images with a saved model.

Uploaded files go through the inference engine exactly as `medft predict`'s do
(`ImageReader`, `score_images`, the thresholds beside the model), and each gets the
task's verdict and table: the top labels, the binary decision at its threshold, or
every finding with its threshold and whether it is reached. A toggle overlays
Grad-CAM, from `medft explain`'s `Explainer`. The page shows the model card's
intended use and the not-for-clinical-use notice. A file that is not an image, is
empty or is too large gets a line on the page saying so, and the server goes on.

Images and results stay on the server and the user's screen: Gradio's analytics,
run history, MCP server and monitoring endpoint are off, and its cache of uploads is
emptied hourly. `write_space` writes the three files of a Hugging Face Space that
serves a Hub model with this same page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from medft import __version__
from medft.card import INTENDED_USE, NOT_FOR_CLINICAL_USE
from medft.config.commands import DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, DEFAULT_TOP_K
from medft.errors import MedftError, first_line
from medft.explain import Explainer
from medft.inference import (
    Classifier,
    ImageReader,
    load_classifier,
    score_images,
    stored_thresholds,
)
from medft.tasks import DEFAULT_THRESHOLD
from medft.thresholds import fixed_thresholds

CACHE_LIFETIME = (3600, 3600)  # Gradio deletes cached uploads hourly, once an hour old
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
    """The model to serve (a local folder or a Hub model id), with its thresholds and notice."""
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
    return ServedModel(classifier, Path(str(model)).name, values, source, card_notice(folder))


# the page's answer to an upload ----------------------------------------------------------------


def escaped(text: str) -> str:
    """``text`` shown literally in Markdown (file names and labels come from users)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def image_section(served: ServedModel, name: str, scores: Any) -> str:
    verdict, columns, rows = served.classifier.task.shown(scores, served.thresholds, DEFAULT_TOP_K)
    table = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(escaped(cell) for cell in row) + " |" for row in rows),
    ]
    return "\n".join([f"#### {escaped(name)}", f"**{escaped(verdict)}**", "", *table])


def classify(
    served: ServedModel, files: list[str] | None, show_cam: bool
) -> tuple[str, list[tuple[Any, str]]]:
    """Markdown for the uploaded ``files`` (results, and what could not be read) and the
    gallery: each readable image, or its Grad-CAM overlay."""
    paths = [Path(file) for file in files or []]
    if not paths:
        return UPLOAD_PROMPT, []
    refused = {i: "the file is empty" for i, path in enumerate(paths) if not path.stat().st_size}
    kept = [i for i in range(len(paths)) if i not in refused]
    classifier = served.classifier
    reader = ImageReader(classifier, [paths[i] for i in kept])
    probs, errors = score_images(classifier, reader, num_workers=0, progress=False)
    for index, reason in errors.items():
        path = paths[kept[index]]
        refused[kept[index]] = f"not readable as an image ({reason.replace(str(path), path.name)})"
    sections, gallery = [], []
    with Explainer(classifier) as explainer:
        for index in (i for i in range(len(kept)) if i not in errors):
            name = paths[kept[index]].name
            sections.append(image_section(served, name, probs[index]))
            image = reader.open(index)
            if show_cam:
                shown = explainer(reader.pixels(image)[None])
                gallery.append((shown.overlay, f"{name}: Grad-CAM for {shown.explained}"))
            else:
                gallery.append((image, name))
    header = f"{len(paths) - len(refused)} of {len(paths)} file(s) classified"
    if served.threshold_source:
        header += f" ({escaped(served.threshold_source)})"
    problems = [
        f"- **{escaped(paths[i].name)}**: {escaped(reason)}"
        for i, reason in sorted(refused.items())
    ]
    if problems:
        sections.insert(0, "**Not classified:**\n" + "\n".join(problems))
    return "\n\n".join([header, *sections]), gallery


def answer(served: ServedModel):
    """The event handler: `classify`, with anything unexpected shown on the page, not raised."""

    def handle(files: list[str] | None, show_cam: bool) -> tuple[str, list[tuple[Any, str]]]:
        try:
            return classify(served, files, show_cam)
        except Exception as error:  # the page reports it and the server goes on
            return f"**Could not classify these files**: {escaped(first_line(error))}", []

    return handle


# the page ---------------------------------------------------------------------------------------


def build_app(served: ServedModel) -> gr.Blocks:
    """The page: upload, Grad-CAM toggle, results, images, and the model card's notice."""
    task = served.classifier.task
    labels = ", ".join(task.label_names[:20]) + (" ..." if len(task.label_names) > 20 else "")
    with gr.Blocks(
        title=f"{served.name} · medft", analytics_enabled=False, delete_cache=CACHE_LIFETIME
    ) as app:
        gr.Markdown(f"## {escaped(served.name)}\n{task.describe()}: {escaped(labels)}")
        gr.Markdown(served.notice, elem_id="notice")
        with gr.Row():
            with gr.Column():
                files = gr.File(
                    label="Images (PNG, JPEG, DICOM)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="upload",
                )
                show_cam = gr.Checkbox(label="Show Grad-CAM overlay", elem_id="grad-cam")
                gallery = gr.Gallery(label="Images", columns=3, height="auto", elem_id="gallery")
            results = gr.Markdown(UPLOAD_PROMPT, elem_id="results")
        gr.on(
            [files.change, show_cam.change],
            answer(served),
            inputs=[files, show_cam],
            outputs=[results, gallery],
            concurrency_limit=1,  # one model, and Grad-CAM's hooks on it: one request at a time
        )
    return app


def launch(
    app: gr.Blocks,
    port: int | None = None,
    share: bool = False,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    **settings: Any,
):
    """Serve the page (port None: $GRADIO_SERVER_PORT or 7860), with nothing sent elsewhere;
    Gradio refuses larger uploads with a message on the page."""
    return app.launch(
        server_port=port,
        share=share,
        max_file_size=int(max_upload_mb * 1e6),
        run_history=False,
        mcp_server=False,
        enable_monitoring=False,
        ssr_mode=False,
        footer_links=[],
        **settings,
    )


def serve(
    model: str | Path,
    *,
    port: int = DEFAULT_PORT,
    share: bool = False,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
) -> None:
    """`medft serve`: the page for ``model`` on http://127.0.0.1:``port`` until interrupted."""
    launch(build_app(load_served_model(model)), port, share, max_upload_mb)


# a Hugging Face Space -------------------------------------------------------------------------

SPACE_APP = '''"""A Hugging Face Space serving {repo_id} with medft (medft serve --write-space).

A private model needs the Space secret HF_TOKEN. Not for clinical use.
"""

from medft.serve import build_app, launch, load_served_model

demo = build_app(load_served_model("{repo_id}"))

if __name__ == "__main__":
    launch(demo, max_upload_mb={max_upload_mb})
'''

SPACE_README = """---
title: {title}
sdk: gradio
sdk_version: {gradio}
app_file: app.py
models:
  - {repo_id}
tags:
  - medft
  - medical
  - image-classification
pinned: false
---

Classify images with [{repo_id}](https://huggingface.co/{repo_id}) ([medft](https://github.com/medft/medft)).

{notice}
"""


def write_space(
    repo_id: str, folder: str | Path, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
) -> list[Path]:
    """app.py, requirements.txt and README.md of a Gradio Space serving the Hub model
    ``repo_id`` with this page."""
    if Path(repo_id).expanduser().exists() or repo_id.count("/") != 1 or repo_id.startswith("."):
        raise MedftError(
            f"--model {repo_id}: a Space loads its model from the Hub; give the "
            "model's Hub id (user/name), pushed with push_to_hub."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "app.py": SPACE_APP.format(repo_id=repo_id, max_upload_mb=max_upload_mb),
        "requirements.txt": f"medft[serve]=={__version__}\n",
        "README.md": SPACE_README.format(title=repo_id.split("/")[1], gradio=gr.__version__,
                                         repo_id=repo_id, notice=NOT_FOR_CLINICAL_USE),
    }  # fmt: skip
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]
