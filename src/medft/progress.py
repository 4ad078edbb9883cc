"""Progress on long work: a bar on a terminal or in a notebook, whole lines in a log.

A bar redraws itself with carriage returns, which a file, a pipe or a cluster's job log
keeps, so a log of `medft prepare` would hold one unreadable line per redraw. Where stderr
is not a terminal, `progress_bar` writes one line when the work starts, one every
`LOG_INTERVAL` seconds and one when it ends ("Reading images: 1266/1266 img (100%) in
00:34, 37.2 img/s"); `quiet_library_bars` turns off the bars `datasets`,
`huggingface_hub` and `transformers` draw themselves, for the same reason.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as terminal_bar

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) in {elapsed}, {rate_fmt}"
UNSIZED_FORMAT = "{desc}: {n_fmt} {unit} in {elapsed}, {rate_fmt}"


def on_a_terminal() -> bool:
    """Whether progress can be drawn as a bar: stderr is a terminal, or a notebook's."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class LogLines(tqdm):
    """tqdm for a log: a whole line at the start, every `LOG_INTERVAL` seconds and at the end,
    never a carriage return."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lines_written = 0
        self.count_written: float | None = None
        sized = kwargs.get("total") is not None or hasattr(args[0] if args else None, "__len__")
        kwargs.update(
            mininterval=LOG_INTERVAL,
            maxinterval=LOG_INTERVAL,
            leave=True,  # the closing line is the summary
            bar_format=LOG_FORMAT if sized else UNSIZED_FORMAT,
            dynamic_ncols=False,
        )
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """The line, after the previous one (close() ends the last line); none where the
        count has not moved since the last."""
        if msg is None and self.n == self.count_written:
            return True
        self.count_written = self.n
        separator = "\n" if self.lines_written else ""
        self.fp.write(separator + (str(self) if msg is None else msg))
        self.fp.flush()
        self.lines_written += 1
        return True


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`: a bar where one can be drawn, `LogLines` otherwise."""
    kind = terminal_bar if on_a_terminal() else LogLines
    return kind(iterable, **kwargs)


def quiet_library_bars() -> None:
    """Turn off the bars of `datasets` (map, save_to_disk), `huggingface_hub` (downloads)
    and `transformers` (writing model shards) where they would be written into a log."""
    if on_a_terminal():
        return
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
