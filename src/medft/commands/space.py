"""`medft serve --write-space`: the three files of a Hugging Face Space (app.py,
requirements.txt, README.md) that serves a Hub model with `medft serve`'s page."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from medft.config.inference import DEFAULT_MAX_UPLOAD_MB
from medft.errors import MedftError
from medft.evaluation.card import NOT_FOR_CLINICAL_USE
from medft.version import __version__

SPACE_APP = '''"""A Hugging Face Space serving {repo_id} with medft (medft serve --write-space).

A private model needs the Space secret HF_TOKEN. Not for clinical use.
"""

from medft.commands.serve import build_app, launch, load_served_model

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
        "README.md": SPACE_README.format(
            title=repo_id.split("/")[1],
            gradio=gr.__version__,
            repo_id=repo_id,
            notice=NOT_FOR_CLINICAL_USE,
        ),
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]
