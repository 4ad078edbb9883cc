"""How a command's option is declared: a positional argument, a list of dataset columns.

`medft.cli` turns each options dataclass into command-line options (as `HfArgumentParser`
does for recipes: ``--field_name`` and ``--field-name``); the metadata here says where a
field differs: ``positional`` for the arguments without a flag, ``action: extend`` for
lists given comma-separated and / or repeated.
"""

from __future__ import annotations

from dataclasses import field

from medft.errors import MedftError


def positional(help: str, **settings) -> dict:
    return {"positional": True, "help": help, **settings}


def comma_separated(values: list[str]) -> list[str]:
    """``['sex,site', 'view']`` -> ``['sex', 'site', 'view']``: each name once, in order."""
    names = (name.strip() for value in values for name in str(value).split(","))
    return list(dict.fromkeys(name for name in names if name))


def column_names(values: list[str] | None, key: str) -> list[str] | None:
    """Column names given comma-separated and / or one by one, in order, each once; None (the
    default) stays None, and 'none' alone is no columns."""
    if values is None:
        return None
    names = comma_separated(values)
    if "none" in names and names != ["none"]:
        raise MedftError(f"{key}: none means no columns; give it alone, got {', '.join(names)}.")
    return [] if names == ["none"] else names


def columns_field(help: str) -> list[str] | None:
    """Dataset columns, comma-separated and / or repeated (--x a,b --x c), read by
    `column_names`."""
    return field(default=None, metadata={"help": help, "action": "extend", "metavar": "COLUMN"})


def subgroup_columns_field(help: str) -> list[str]:
    """The columns a prepared dataset keeps to compare a model's results by, comma-separated
    and / or repeated, read by `comma_separated`."""
    return field(
        default_factory=list,
        metadata={
            "help": f"{help}; comma-separated (a,b) and/or repeated",
            "action": "extend",
            "metavar": "COLUMN",
        },
    )
