"""The one way every benchmark hands over its result: the table on stdout, the JSON to `--out`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(table: str | list[str], result: dict[str, Any], out: Path | None) -> None:
    """Print the table (a string or its lines) and, when `out` is given, write `result` there as JSON."""
    text = table if isinstance(table, str) else "\n".join(table)
    sys.stdout.write(text + "\n")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
