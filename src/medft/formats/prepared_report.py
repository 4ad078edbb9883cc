"""A prepared dataset's `prepare_report.json`, read back: its name, and the reading.

`medft.prepare.report` writes it; training (the DICOM settings a dataset was read with),
evaluation and the public names read it here, without importing the preparation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_NAME = "prepare_report.json"


def read_report(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / REPORT_NAME
    return json.loads(path.read_text()) if path.exists() else None
