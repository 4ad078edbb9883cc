"""A finished run's model folder to the Hugging Face Hub: what is pushed, and the push."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi

NOT_PUSHED = ("checkpoint-", "runs", "run-")  # checkpoints, logs, search trials


def files_to_push(output_dir: str | Path) -> list[str]:
    """The files of a finished run that go to the Hub: everything but checkpoints and logs."""
    root = Path(output_dir)
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and not path.relative_to(root).parts[0].startswith(NOT_PUSHED)
    )


def push_model(output_dir: str | Path, repo_id: str, *, private: bool | None, token: str | None):
    """Upload the model, its processor settings, card, metrics and plots to ``repo_id``."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(output_dir),
        repo_id=repo_id,
        allow_patterns=files_to_push(output_dir),
        commit_message="Upload model trained with medft",
    )
    return url
