"""Import, export, import again: the second dataset holds exactly what the first one did.

For each export format, on each database, for tabular and text datasets, with hostile
column names and values: quotes, percent signs (psycopg's placeholders), unicode with
right-to-left text and emoji, newlines, tabs, backslashes, commas, the characters that make
a spreadsheet run a cell as a formula, leading apostrophes (the formula escape itself) and
very long names. Half of each table is written by hand, half drawn from a seeded random
generator over the same hostile pieces, so that a failure reproduces.
"""

from __future__ import annotations

import csv
import io
import random
import re

import pytest

from tests.builders import make_dataset
from tests.datasets.helpers import dataset, parquet_bytes, samples, upload

FORMATS = ("csv", "jsonl", "parquet")

# Names and cell values that have broken, or could break, a CSV, JSON or SQL path.
HOSTILE = [
    "pct%", "pct%%s", "%s", "%(name)s", "100%", "a\"b", "a'b", "'lead", "''two", "'",
    '=HYPERLINK("http://evil.example","x")', "+1", "-x", "@cmd", "=1+1", "\ttabbed", "\rreturn",
    "new\nline", "cr\r\nlf", "back\\slash", "\\N", "comma,name", "semi;colon", "שלום עולם",
    "\u202eevil.exe", "emoji 😀🎉", "ünïcødé ✓", "x" * 300, "ä" * 70, "NA", "null", "None", "NaN", "007",
    "1e5", "-1.5", "{\"json\": 1}", "[1]", "$1", ":name", "?", "-- comment", "/* c */", "'; DROP TABLE samples; --",
    "quote \"in\" middle", "tab\tin\tmiddle", "trailing\\", "E'x'", "$$dollar$$", "\u2028line sep",
]
PIECES = ["%", "%%", "%s", "'", '"', "=", "+", "-", "@", "\t", "\n", "\r", "\\", ",", ";", " ", "ש", "😀",
          "a", "b", "z", "0", "9", ".", "é", "\u202e", "{", "}", "$", "NA"]
FLOATS = [0.0, -0.0, 1.5, -2.25, 0.1, 1 / 3, -1e-7, 1e20, 1e-300, 5e-324, 1.7976931348623157e308, -3.0, 2.0**53, None]


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(n))


def _usable(value: str) -> bool:
    """A value an import keeps as it is: ids, labels and text are stripped or must not be blank."""
    return value == value.strip() and value.strip() != ""


def _feature_names(rng: random.Random) -> list[str]:
    reserved = {"id", "label", "split", "text", "image"}
    names = [h for h in HOSTILE if h.strip() and h not in reserved]
    while len(names) < len(HOSTILE) + 12:
        name = _random_text(rng, rng.randint(1, 12))
        if name.strip() and name not in names and name not in reserved:
            names.append(name)
    return names


def _table(task: str, seed: int) -> dict[str, list]:
    rng = random.Random(seed)
    classes = ["=cat", "'dog", "-neg", "pct%s", "a,b", "q\"uote", "new\nline", "😀", "שלום", "@at", "+plus", "\\"]
    ids = [h for h in HOSTILE if _usable(h) and len(h) <= 255]
    while len(ids) < 2 * len(HOSTILE):
        candidate = _random_text(rng, rng.randint(1, 20))
        if _usable(candidate) and candidate not in ids:
            ids.append(candidate)
    n = len(ids)
    labels = [rng.choice(classes + [""]) for _ in range(n)]
    labels[:2] = classes[:2]  # a first import needs two classes
    splits = ["unlabelled" if not label else rng.choice(["train", "valid", "test"]) for label in labels]
    table: dict[str, list] = {"id": ids, "label": labels, "split": splits}
    if task == "text":
        texts = [h for h in HOSTILE if h.strip()]
        table["text"] = [texts[i] if i < len(texts) else _random_text(rng, rng.randint(1, 80)) for i in range(n)]
        table["text"] = [t if t.strip() else "x" + t for t in table["text"]]
    else:
        for name in _feature_names(rng):
            table[name] = [rng.choice(FLOATS) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6) for _ in range(n)]
    return table


def _numbers(features: dict | None) -> dict | None:
    """Feature values as floats: Postgres's jsonb hands back 1e20 as the integer it equals."""
    return None if features is None else {k: None if v is None else float(v) for k, v in features.items()}


def _content(db, ds_id: int) -> list[tuple]:
    return [(s.external_id, s.split, s.label, s.original_label, s.text, _numbers(s.features)) for s in samples(db, ds_id)]


def _first_difference(got: list[tuple], want: list[tuple]) -> str:
    """Where two datasets' contents first differ, down to the feature, for a readable failure."""
    if len(got) != len(want):
        return f"{len(got)} samples, expected {len(want)}"
    fields = ("id", "split", "label", "original_label", "text", "features")
    for row, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, a, b in zip(fields, g, w, strict=True):
            if name == "features" and a != b and a is not None and b is not None:
                keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "absent") != b.get(k, "absent")]
                return f"row {row}, features {[(k, a.get(k, 'absent'), b.get(k, 'absent')) for k in keys[:5]]}"
            if a != b:
                return f"row {row}, {name}: {a!r} != {b!r}"
    return "no difference"


@pytest.mark.parametrize("task", ["tabular", "text"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_export_imports_back_exactly(client, db, engineer, task, fmt):
    table = _table(task, seed=FORMATS.index(fmt) * 2 + (task == "text"))
    first = make_dataset(db, task, classes=[], settings={})
    r = upload(client, first.id, "hostile.parquet", parquet_bytes(table), engineer.headers)
    assert r.status_code == 201, r.text
    # The first import keeps every hostile value as it was given.
    got = samples(db, first.id)
    assert [s.external_id for s in got] == table["id"]
    assert [s.label or "" for s in got] == table["label"]
    if task == "tabular":
        names = [c for c in table if c not in ("id", "label", "split")]
        assert dataset(db, first.id).settings["features"] == names
        want = [{k: table[k][i] for k in names} for i in range(len(got))]
        assert [_numbers(s.features) for s in got] == want, _first_difference(
            [(None,) * 5 + (_numbers(s.features),) for s in got], [(None,) * 5 + (w,) for w in want]
        )
    else:
        assert [s.text for s in got] == table["text"]

    r = client.get(f"/api/v1/datasets/{first.id}/export", params={"format": fmt}, headers=engineer.headers)
    assert r.status_code == 200, r.text
    exported = r.content
    second = make_dataset(db, task, classes=[], settings={})
    r = upload(client, second.id, f"export.{fmt}", exported, engineer.headers)
    assert r.status_code == 201, r.text[:3000]
    got, want = _content(db, second.id), _content(db, first.id)
    assert got == want, _first_difference(got, want)
    a, b = dataset(db, first.id), dataset(db, second.id)
    assert (b.classes, b.settings.get("features")) == (a.classes, a.settings.get("features"))

    # And the second dataset exports byte for byte what the first one did, but for the
    # columns that hold its own samples' ids.
    again = client.get(f"/api/v1/datasets/{second.id}/export", params={"format": fmt}, headers=engineer.headers)
    if fmt != "parquet":
        assert _without_sample_ids(again.content, fmt) == _without_sample_ids(exported, fmt)


def _without_sample_ids(content: bytes, fmt: str):
    """An export with its sample_id and url cells (which hold the dataset's own sample ids)
    blanked: CSV as rows of cells, JSONL as its bytes."""
    if fmt == "jsonl":
        return re.sub(rb'"sample_id":\d+|"url":"[^"]*"', b"", content)
    rows = list(csv.reader(io.StringIO(content.decode(), newline="")))
    drop = {rows[0].index("sample_id"), *([rows[0].index("url")] if "url" in rows[0] else [])}
    return [[cell for k, cell in enumerate(row) if k not in drop] for row in rows]
