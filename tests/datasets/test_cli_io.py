"""`curate import` and `curate export` through the real command, against the test database."""

from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from tests.builders import make_dataset
from tests.datasets.helpers import csv_bytes, png, samples, zip_bytes


@pytest.fixture
def run(database_url, tmp_path, monkeypatch):
    """Invoke `curate ...` with the environment pointing at the test database."""
    monkeypatch.setenv("CURATE_DATABASE_URL", database_url)
    monkeypatch.setenv("CURATE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, [str(a) for a in args])
    get_settings.cache_clear()


def test_import_by_name_then_by_id_with_update(run, db, tmp_path):
    ds = make_dataset(db, "tabular", classes=[], name="iris-cli")
    first = tmp_path / "first.csv"
    first.write_bytes(csv_bytes("id,label,f0", "a,x,1", "b,y,2"))
    result = run("import", "iris-cli", first)
    assert result.exit_code == 0, result.output
    assert "imported 2 samples into 'iris-cli'" in result.stdout
    assert "classes: x, y" in result.stdout

    again = tmp_path / "again.csv"
    again.write_bytes(csv_bytes("id,label", "a,y"))
    result = run("import", ds.id, again)
    assert result.exit_code == 1
    assert "row 1, id: id 'a' already exists" in result.stderr.replace("\n", " ")

    result = run("import", ds.id, again, "--on-conflict", "update")
    assert result.exit_code == 0, result.output
    assert "updated 1" in result.stdout
    assert [s.label for s in samples(db, ds.id)] == ["y", "y"]


def test_import_errors_exit_1_and_write_nothing(run, db, tmp_path):
    ds = make_dataset(db, "tabular", classes=["x", "y"])
    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes("label,split,f0", "x,,1", "z,,2", "x,later,3"))
    result = run("import", ds.name, bad)
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "bad.csv: 2 errors; nothing was imported" in err
    assert "row 2, label: label 'z' is not one of the dataset's classes" in err
    assert "row 3, split: unknown split 'later'" in err
    assert samples(db, ds.id) == []

    assert run("import", "no-such-dataset", bad).exit_code == 1
    assert run("import", ds.name, tmp_path / "missing.csv").exit_code == 1


def test_import_a_zip_reports_duplicates(run, db, tmp_path):
    ds = make_dataset(db, "image", classes=[])
    path = tmp_path / "pets.zip"
    path.write_bytes(zip_bytes({"cat/1.png": png(), "dog/1.png": png((0, 0, 1)), "dog/2.png": png()}))
    result = run("import", ds.name, path)
    assert result.exit_code == 0, result.output
    assert "imported 3 samples" in result.stdout
    assert "duplicate image: row dog/2.png has the same content as row cat/1.png" in result.stdout


def test_export_to_stdout_and_to_files(run, db, tmp_path):
    ds = make_dataset(db, "tabular", classes=[], name="exp-cli")
    src = tmp_path / "src.csv"
    src.write_bytes(csv_bytes("id,label,split,f0", "a,=x,,1.5", "b,y,valid,-2"))
    assert run("import", "exp-cli", src).exit_code == 0

    result = run("export", "exp-cli")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["id"], r["split"], r["label"], float(r["f0"])) for r in rows] == [
        ("a", "train", "'=x", 1.5), ("b", "valid", "y", -2.0),
    ]

    result = run("export", ds.id, "--format", "jsonl", "--split", "valid")
    assert result.exit_code == 0
    b_id = samples(db, ds.id)[1].id
    assert [line for line in result.stdout.splitlines()] == [
        f'{{"id":"b","sample_id":{b_id},"external_id":"b","split":"valid","label":"y","label_source":"original",'
        '"reviewed":false,"f0":-2.0,"run_id":null,"predicted":null,"loss":null,"self_confidence":null,'
        '"normalized_margin":null,"confusion_margin":null,"entropy":null,"aum":null,"combined":null,"flagged":null,'
        '"suggested_label":null,"priority":null,"outlier":null,"duplicate_group":null,"consensus_label":null,"consensus_rule":null,"annotations":0,'
        '"agreement":null}'
    ]

    out = tmp_path / "out.parquet"
    assert run("export", "exp-cli", "--format", "parquet", "--out", out).exit_code == 0
    assert pq.read_table(out).column("label").to_pylist() == ["=x", "y"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "parquet"], "give --out FILE"),
        (["--format", "xml"], "format must be one of"),
        (["--split", "holdout"], "split must be one of"),
        (["--snapshot", "12345"], "snapshot 12345 not found"),
    ],
)
def test_export_refusals(run, db, args, words):
    ds = make_dataset(db, "tabular")
    result = run("export", ds.name, *args)
    assert result.exit_code == 1
    assert words in result.stderr
    assert run("export", "no-such-dataset").exit_code == 1
