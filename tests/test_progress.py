"""Progress in a log: whole lines, no carriage returns; bars only on a terminal."""

from __future__ import annotations

import io

import pytest

from medft import progress
from medft.progress import LogLines, progress_bar


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)


def test_a_log_gets_one_whole_line_per_count_and_no_carriage_return(every_update):
    log = io.StringIO()
    with LogLines(total=4, desc="Reading images", unit="img", file=log) as bar:
        for _ in range(4):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert text.endswith("\n")
    assert [line.split(" img")[0] for line in lines] == [
        f"Reading images: {count}/4" for count in range(5)
    ]
    assert lines[-1].startswith("Reading images: 4/4 img (100%) in ")


def test_a_log_line_is_written_at_most_every_interval():
    log = io.StringIO()
    for _ in LogLines(range(1000), desc="hashing", file=log):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) == 2  # the start and the end, for work shorter than LOG_INTERVAL
    assert lines[-1].startswith("hashing: 1000/1000 it (100%)")


def test_work_of_unknown_length_is_counted(every_update):
    log = io.StringIO()
    for _ in LogLines(iter(range(3)), desc="files", unit="file", file=log):
        pass
    assert log.getvalue().splitlines()[-1].startswith("files: 3 file in ")


def test_progress_bar_draws_a_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "on_a_terminal", lambda: False)
    with progress_bar(total=1, file=io.StringIO()) as bar:
        assert isinstance(bar, LogLines)
    monkeypatch.setattr(progress, "on_a_terminal", lambda: True)
    with progress_bar(total=1, file=io.StringIO()) as bar:
        assert not isinstance(bar, LogLines)


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in LogLines(range(3), disable=True, file=log):
        pass
    assert log.getvalue() == ""


def test_the_libraries_bars_are_turned_off_in_a_log_and_left_on_a_terminal(monkeypatch):
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    from medft.progress import quiet_library_bars

    datasets.enable_progress_bars()  # as a session starts (other tests may have run the cli)
    try:
        monkeypatch.setattr(progress, "on_a_terminal", lambda: True)
        quiet_library_bars()
        assert datasets.is_progress_bar_enabled()
        monkeypatch.setattr(progress, "on_a_terminal", lambda: False)
        quiet_library_bars()
        assert not datasets.is_progress_bar_enabled()
        assert huggingface_hub.utils.are_progress_bars_disabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
