"""app.jsonsafe: one way to make a value strict JSON, for job results, cursors and answers."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pytest

from app.jsonsafe import jsonable


def test_plain_json_passes_unchanged():
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": False}}
    assert jsonable(value) == value


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf")])
def test_nan_and_infinities_become_null(bad):
    assert jsonable(bad) is None
    assert jsonable({"loss": bad, "history": [1.0, bad]}) == {"loss": None, "history": [1.0, None]}


def test_numpy_scalars_and_arrays_become_python():
    out = jsonable({"n": np.int64(3), "f": np.float32(0.5), "ok": np.bool_(True), "a": np.array([[1.0, np.nan], [2.0, 3.0]])})
    assert out == {"n": 3, "f": 0.5, "ok": True, "a": [[1.0, None], [2.0, 3.0]]}
    assert [type(v) for v in (out["n"], out["f"], out["ok"])] == [int, float, bool]
    assert type(jsonable(np.float64(1.5))) is float
    json.dumps(out, allow_nan=False)


def test_tuples_become_lists_and_keys_strings():
    assert jsonable({1: (1, 2)}) == {"1": [1, 2]}


def test_torch_tensors_become_python():
    torch = pytest.importorskip("torch")
    assert jsonable({"t": torch.tensor(2.5), "v": torch.tensor([1.0, float("inf")])}) == {"t": 2.5, "v": [1.0, None]}


def test_what_json_cannot_hold_is_named_by_its_path():
    with pytest.raises(TypeError, match=r"result\.when\[1\] is of type datetime"):
        jsonable({"when": [1, datetime(2020, 1, 1)]}, "result")
    with pytest.raises(TypeError, match=r"value is of type set"):
        jsonable({1, 2})
