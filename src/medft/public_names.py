"""Names for what medft writes where others read it: the files a model folder pushes to the Hub
(model card, metrics.json, recipe.json, training_args.json, trainer_state.json) and what
`medft serve` shows. A dataset or a model is named, never located: hospital exports name
folders after patients, and a local path means nothing on the Hub anyway.
"""

from __future__ import annotations

from pathlib import Path

from medft.formats.prepared_report import read_report


def is_local(name: str | Path) -> bool:
    """A path on this machine rather than a Hub id or a model type."""
    text = str(name)
    return Path(text).expanduser().exists() or text.startswith(("/", ".", "~"))


def model_name(model: str | Path) -> str:
    """A Hub id or model type as it is; a local model folder or weights file by its own name."""
    return Path(model).expanduser().resolve().name if is_local(model) else str(model)


def dataset_name(dataset: str | Path) -> str:
    """A Hub id as it is; a prepared folder by the name its ``prepare_report.json`` gives,
    else by the folder's name."""
    if not is_local(dataset):
        return str(dataset)
    folder = Path(dataset).expanduser().resolve()
    report = read_report(folder) if folder.is_dir() else None
    return (report or {}).get("name") or folder.name


def path_within(path: str | Path, root: str | Path) -> str:
    """``path`` relative to ``root`` when inside it ('checkpoint-40'), else its own name."""
    resolved, root = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    if resolved != root and resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    return resolved.name
