"""Values as strict JSON holds them: what a JSON column, a cursor or an API answer may carry.

JSON has no NaN or infinity (Postgres' JSONB refuses them, and json.dumps would write the
non-standard NaN), so they become null; numpy and torch scalars and arrays become Python
numbers and lists.
"""

from __future__ import annotations

import math
from typing import Any


def jsonable(value: Any, path: str = "value") -> Any:
    """value as plain JSON: NaN and infinities as None, numpy (or torch) scalars and arrays as
    Python numbers and lists, tuples as lists, dict keys as strings.

    Raises TypeError, naming where in value (path) it is, for anything else JSON cannot hold.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    ndim = getattr(value, "ndim", None)
    if ndim == 0 and callable(getattr(value, "item", None)):
        return jsonable(value.item(), path)
    if ndim is not None and callable(getattr(value, "tolist", None)):
        return jsonable(value.tolist(), path)
    raise TypeError(f"{path} is of type {type(value).__name__}, which JSON cannot hold")
