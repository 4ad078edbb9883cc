"""A private temporary folder for one server process: readable by its owner only (mode
0700), named in an environment variable for the libraries that read it, and removed when
the server stops: at normal exit, on Ctrl-C, and on SIGTERM (which `kill` and service
managers send), handled here as Ctrl-C is."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_temp_folder(variable: str, prefix: str) -> Iterator[Path]:
    """A new folder in the system's temporary folder ($TMPDIR), named in ``variable`` while the
    block runs; removed with everything in it when the block ends, however it ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
    previous = os.environ.get(variable)
    os.environ[variable] = str(folder)
    in_main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        yield folder
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, handler)
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
        shutil.rmtree(folder, ignore_errors=True)
