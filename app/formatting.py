"""Numbers in log lines and pages, one way everywhere."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ".4f", missing: str = "n/a") -> str:
    """A float with `spec` (e.g. ".2f", ".4g"), `missing` for None, anything else as str()."""
    if value is None:
        return missing
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
