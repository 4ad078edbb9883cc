"""What a run owns in its output_dir, and whether a folder holds this run.

`train()` writes `medft_run.json` into its output_dir before it trains, and marks it
finished at the end: a digest of each recipe setting that changes what is trained, the
dataset's fingerprint, and medft's version; no path, since the folder may be pushed. A
rerun into the folder resumes only when the record matches, from the newest checkpoint
the Trainer can resume from; a folder holding another run (or a run's files without a
record) is refused, unless ``overwrite_output_dir`` asks to remove every file a run owns
(`OWNED`) first. Files a run does not own are kept.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub.constants import REPOCARD_NAME
from safetensors import SafetensorError, safe_open
from transformers.trainer import TRAINER_STATE_NAME, TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    CONFIG_NAME,
    IMAGE_PROCESSOR_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

from medft.config import MedftTrainingArguments
from medft.data.streamed import position_files
from medft.errors import MedftError
from medft.evaluation.conformal import CONFORMAL_NAME
from medft.evaluation.evaluate import METRICS_NAME
from medft.evaluation.external import AGAINST_OWN_NAME, TEST_SCORES_NAME
from medft.evaluation.local_fit import LOCAL_FIT_NAME
from medft.evaluation.plots import (
    CONFUSION_NAME,
    CURVES_NAME,
    PR_NAME,
    RELIABILITY_NAME,
    ROC_NAME,
    SUBGROUPS_NAME,
    UNCALIBRATED_NAME,
)
from medft.evaluation.priors import TRAINING_LABELS_NAME
from medft.evaluation.thresholds import THRESHOLDS_NAME
from medft.formats.dicom_settings import SETTINGS_NAME
from medft.inference.ood import OOD_NAME
from medft.parsing import RECIPE_NAME
from medft.training.ema import EMA_NAME
from medft.training.saved_folders import ARGUMENTS_NAME
from medft.version import __version__

logger = logging.getLogger("medft")
RECORD_NAME = "medft_run.json"
# what `medft cv` writes into a fold's folder beside the run's own files
FOLD_RESULT = "cv_fold.json"  # written when a fold has finished
HELD_OUT = "held_out.npz"  # its out-of-fold probabilities
PARTIAL = ".partial"  # a file being written (`write_atomically`)
CHECKPOINTS = f"{PREFIX_CHECKPOINT_DIR}-*"
# The Trainer resumes a model from one of these files (or from a folder of FSDP / DeepSpeed
# / adapter state), and writes trainer_state.json after them.
WEIGHT_FILES = (
    SAFE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    WEIGHTS_INDEX_NAME,
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
)
# Settings that do not change what is trained, left out of the record so that a rerun that
# changes only them resumes: where the run writes, pushes and logs, how it treats the folder,
# how fast this machine loads and evaluates, and which device it has (the loader workers
# and use_cpu default to this machine's). The dataset is compared by its fingerprint, not by
# where it lies.
NOT_TRAINED = frozenset({
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "save_total_limit",
    "save_on_each_node", "dataset_name",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
    "hub_always_push", "hub_revision",
    "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id",
    "trackio_static_space_id", "log_level", "log_level_replica", "log_on_each_node",
    "disable_tqdm", "skip_memory_metrics", "logging_nan_inf_filter",
    "dataloader_num_workers", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_pin_memory", "dataloader_multiprocessing_context", "per_device_eval_batch_size",
    "eval_accumulation_steps", "torch_empty_cache_steps", "ddp_timeout", "local_rank",
    "use_cpu", "feature_cache_dir",
    # how the trained model is evaluated afterwards, not what is trained
    "bootstrap_resamples", "threshold_method", "subgroups", "conformal", "ood_false_flag_rate",
})  # fmt: skip


def owned_names() -> tuple[str, ...]:
    """Name patterns of every file and folder a run writes into its output_dir."""
    return (
        CONFIG_NAME, SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, "model-*-of-*.safetensors",
        WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "pytorch_model-*-of-*.bin", ADAPTER_CONFIG_NAME,
        ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME, IMAGE_PROCESSOR_NAME,
        CHECKPOINTS, TRAINER_STATE_NAME, TRAINING_ARGS_NAME, "*_results.json",
        ARGUMENTS_NAME, RECIPE_NAME, SETTINGS_NAME, METRICS_NAME, THRESHOLDS_NAME,
        CURVES_NAME, CONFUSION_NAME, ROC_NAME, PR_NAME, RELIABILITY_NAME, UNCALIBRATED_NAME,
        SUBGROUPS_NAME.format("*"), REPOCARD_NAME, FOLD_RESULT, HELD_OUT, RECORD_NAME,
        TEST_SCORES_NAME, AGAINST_OWN_NAME, CONFORMAL_NAME, TRAINING_LABELS_NAME,
        LOCAL_FIT_NAME, OOD_NAME, f"*{PARTIAL}",
    )  # fmt: skip


def owned_files(folder: Path) -> list[Path]:
    """What in ``folder`` a run owns, sorted by name."""
    if not folder.is_dir():
        return []
    patterns = owned_names()
    return sorted(
        path
        for path in folder.iterdir()
        if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in patterns)
    )


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all (a kill never leaves half a file)."""
    partial = path.with_name(path.name + PARTIAL)
    partial.write_text(text)
    os.replace(partial, path)


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_settings(data_args: Any, model_args: Any, training_args: Any) -> dict[str, Any]:
    """The values of the recipe's settings (data, model, training) that change what is
    trained, and the number of processes: they share out each step's batch, so a step of
    two processes is another step than one of one (a run resumed with another number would
    count its epochs in other steps)."""
    values = dataclasses.asdict(data_args) | dataclasses.asdict(model_args)
    values |= training_args.to_dict() | {"processes": training_args.world_size}
    return {name: value for name, value in values.items() if name not in NOT_TRAINED}


@dataclass(frozen=True)
class RunRecord:
    """One run: a digest of each setting (so that a refusal names what differs), the dataset.
    ``values`` are this process's settings, for messages; never written (they hold paths)."""

    recipe: str  # the digest of ``settings``: one value to compare runs by
    settings: dict[str, str]
    dataset: dict[str, Any]
    medft_version: str = __version__
    finished: bool = False
    values: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, values: Mapping[str, Any], dataset: dict[str, Any]) -> RunRecord:
        settings = {name: digest(value) for name, value in values.items()}
        return cls(digest(settings), settings, dataset, values=values)

    def differences(self, before: RunRecord) -> list[str]:
        """The settings that differ from ``before``'s, with their values now, then "the
        dataset"."""
        names = sorted(set(self.settings) | set(before.settings))
        changed = [name for name in names if self.settings.get(name) != before.settings.get(name)]
        return [self.shown(name) for name in changed] + ["the dataset"] * (
            self.dataset != before.dataset
        )

    def shown(self, name: str, limit: int = 40) -> str:
        if name not in self.values:
            return name
        value = json.dumps(self.values[name], default=str)
        return f"{name} (now {value if len(value) <= limit else value[: limit - 3] + '...'})"

    def write(self, folder: Path) -> None:
        content = {key: value for key, value in dataclasses.asdict(self).items() if key != "values"}
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / RECORD_NAME, json.dumps(content, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> RunRecord | None:
        """The record in ``folder``; None when there is none or it cannot be read."""
        try:
            return cls(**json.loads((folder / RECORD_NAME).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def another_run(folder: Path, why: str) -> MedftError:
    return MedftError(
        f"output_dir {folder} holds another run ({why}); pass --overwrite_output_dir true (in "
        "a recipe: overwrite_output_dir: true) to replace it, or choose a new output_dir."
    )


def checkpoint_problem(folder: Path, needs: tuple[str, ...] = ()) -> str | None:
    """Why the Trainer could not resume from ``folder`` (a kill during a save leaves no
    trainer_state.json, which it writes last), or None when it can; ``needs``: files medft
    itself reads back (the EMA of the weights)."""
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE_NAME}"
    except (OSError, ValueError):
        return f"{TRAINER_STATE_NAME} cannot be read"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights and not any(path.is_dir() for path in folder.iterdir()):
        return "no model weights"
    for path in [*weights, *(folder / name for name in needs)]:
        if not path.is_file():
            return f"no {path.name}"
        if path.suffix == ".safetensors" and not readable_safetensors(path):
            return f"{path.name} is empty or truncated"
    return None


def readable_safetensors(path: Path) -> bool:
    """The header reads and the file holds every tensor it lists."""
    try:
        with safe_open(str(path), "pt"):
            return True
    except (SafetensorError, OSError):
        return False


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def newest_complete_checkpoint(folder: Path, needs: tuple[str, ...], writes: bool) -> Path | None:
    """The newest checkpoint in ``folder`` the run can resume from; incomplete ones are
    named in the log and (by the process that writes) removed."""
    checkpoints = [
        path
        for path in folder.glob(CHECKPOINTS)
        if path.is_dir() and path.name.rsplit("-", 1)[1].isdigit()
    ]
    complete = []
    for checkpoint in sorted(checkpoints, key=step_of):
        problem = checkpoint_problem(checkpoint, needs)
        if problem is None:
            complete.append(checkpoint)
            continue
        logger.warning("Passed over the incomplete %s (%s), removed", checkpoint.name, problem)
        if writes:
            remove(checkpoint)
    return complete[-1] if complete else None


def check_resume_from(
    checkpoint: Path, output_dir: Path, *, overwrite: bool, needs: tuple[str, ...] = ()
) -> None:
    """Refuse a ``resume_from_checkpoint`` the Trainer could not resume from."""
    if not checkpoint.is_dir():
        raise MedftError(f"resume_from_checkpoint {checkpoint} does not exist.")
    problem = checkpoint_problem(checkpoint, needs)
    if problem:
        raise MedftError(
            f"resume_from_checkpoint {checkpoint} is incomplete ({problem}); give a complete "
            "checkpoint, or leave resume_from_checkpoint out to resume from the newest complete "
            "one in output_dir."
        )
    if overwrite and checkpoint.resolve().parent == output_dir.resolve():
        raise MedftError(
            f"overwrite_output_dir would remove resume_from_checkpoint {checkpoint}; "
            "keep one of the two."
        )


def other_run(folder: Path, record: RunRecord) -> str | None:
    """Why ``folder`` holds another run than ``record``'s; None when it holds this run or
    none."""
    leftovers = owned_files(folder)
    if not leftovers:
        return None
    before = RunRecord.read(folder)
    if before is None and (folder / RECORD_NAME).exists():
        return f"its {RECORD_NAME} cannot be read"
    if before is None:
        names = ", ".join(path.name for path in leftovers[:3]) + ", ..." * (len(leftovers) > 3)
        return f"{names} without a {RECORD_NAME}: written by an older medft or another tool"
    differences = record.differences(before)
    return f"differs in: {', '.join(differences)}" if differences else None


def claim_output_dir(
    folder: Path,
    record: RunRecord,
    *,
    overwrite: bool,
    needs: tuple[str, ...] = (),
    writes: bool = True,
) -> Path | None:
    """Make ``folder`` this run's: the checkpoint to resume from when it holds this run (the
    same settings and dataset), else None after removing every file a run owns there (with
    ``overwrite``, or when none of this run's checkpoints is complete). Refuses a folder
    holding another run. Only the process that ``writes`` removes and writes files."""
    if not overwrite:
        why = other_run(folder, record)
        if why:
            raise another_run(folder, why)
        checkpoint = newest_complete_checkpoint(folder, needs, writes)
        if checkpoint is not None:
            if writes:
                record.write(folder)
            return checkpoint
    if writes:
        remove_owned(folder)
        record.write(folder)
    return None


def remove_owned(folder: Path) -> None:
    """Remove every file and folder of a run from ``folder``, keeping the others."""
    leftovers = owned_files(folder)
    if leftovers:
        logger.info(
            "Removing %d files and folders of a run from %s (others are kept)",
            len(leftovers),
            folder,
        )
    for path in leftovers:
        remove(path)


def mark_finished(folder: Path) -> None:
    record = RunRecord.read(folder)
    if record is not None:
        dataclasses.replace(record, finished=True).write(folder)


def checkpoint_to_resume(
    args: MedftTrainingArguments, record: RunRecord, streamed: bool = False
) -> str | None:
    """The checkpoint named by ``resume_from_checkpoint``, else the newest complete one of this
    run in ``output_dir`` (a streamed run's: with every process's stream position), once
    output_dir is this run's (`medft.training.run_record`). Every process decides alike; the
    main one removes and writes files first."""
    output, needs = Path(args.output_dir), (EMA_NAME,) * (args.ema_decay is not None)
    needs += position_files(args.world_size) if streamed else ()
    given = args.resume_from_checkpoint
    if given:
        check_resume_from(Path(given), output, overwrite=args.overwrite_output_dir, needs=needs)
    with args.main_process_first(local=args.save_on_each_node, desc="claiming output_dir"):
        found = claim_output_dir(
            output,
            record,
            overwrite=args.overwrite_output_dir,
            needs=needs,
            writes=args.should_save,
        )
    return given or (str(found) if found else None)
