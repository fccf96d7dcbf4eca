"""The multi-label demo: digit mosaics tagged with their digits, with recorded tag noise,
loaded by `curate demo --multilabel` through the public import path."""

from collections import Counter

from sqlalchemy import select
from typer.testing import CliRunner

from app.datasets.demo_multilabel import CLASSES, MULTILABEL_DEMO_NAME, RUN_PARAMS, mosaic_records
from app.models import Dataset, Job, LabelEvent, Sample


def test_mosaics_are_unique_tagged_with_their_digits_and_a_recorded_share_of_train_is_noisy():
    from sklearn.datasets import load_digits

    target = load_digits().target
    records = mosaic_records()
    assert Counter(r.split for r in records) == {"train": 1000, "valid": 200, "test": 200, "unlabelled": 100}
    assert len({r.digits for r in records}) == len(records), "no two mosaics are the same images"
    assert len({r.png for r in records}) == len(records)
    for r in records:
        assert r.true_tags == tuple(c for c in CLASSES if int(c) in {int(target[i]) for i in r.digits if i >= 0})
    assert all(r.tags is None and not r.noisy for r in records if r.split == "unlabelled")
    assert all(r.tags == r.true_tags for r in records if r.split in ("valid", "test"))
    noisy = [r for r in records if r.noisy]
    assert len(noisy) == 120 and all(r.split == "train" for r in noisy)
    kinds = Counter(r.noise.split()[0] for r in noisy)
    assert kinds == {"missing": 60, "extra": 60}
    for r in noisy:
        kind, tag = r.noise.split()
        if kind == "missing":
            assert tag in r.true_tags and set(r.tags) == set(r.true_tags) - {tag}
        else:
            assert tag not in r.true_tags and set(r.tags) == set(r.true_tags) | {tag}
    assert all(r.tags == r.true_tags for r in records if r.split == "train" and not r.noisy)
    assert Counter(len(r.true_tags) for r in records).keys() == {0, 1, 2}, "sets of every size, the empty one too"
    assert [r.png for r in mosaic_records()[:5]] == [r.png for r in records[:5]], "a fixed seed"


def test_curate_demo_multilabel_imports_the_mosaics_and_queues_a_run(monkeypatch, tmp_path, database_url, engine, db):
    from app.cli import cli
    from app.config import get_settings

    monkeypatch.setenv("CURATE_DATABASE_URL", database_url)
    monkeypatch.setenv("CURATE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(cli, ["demo", "--multilabel"])
        assert first.exit_code == 0, first.output
        assert f"loaded the demo dataset {MULTILABEL_DEMO_NAME!r}" in first.output
        again = runner.invoke(cli, ["demo", "--multilabel"])
        assert "is already loaded" in again.output
    finally:
        get_settings.cache_clear()
    ds = db.scalars(select(Dataset)).one()
    assert (ds.name, ds.task, ds.multilabel, ds.classes) == (MULTILABEL_DEMO_NAME, "image", True, CLASSES)
    stored = {s.external_id: s for s in db.scalars(select(Sample).where(Sample.dataset_id == ds.id))}
    records = mosaic_records()
    assert len(stored) == len(records)
    for r in records:
        s = stored[r.external_id]
        assert s.split == r.split and s.image_blob
        assert s.label == (None if r.tags is None else "|".join(r.tags))
    noisy = [r for r in records if r.noisy]
    assert all(stored[r.external_id].label != "|".join(r.true_tags) for r in noisy)
    assert db.scalars(select(LabelEvent)).all() == [], "an import is no label change"
    (job,) = db.scalars(select(Job)).all()
    assert (job.dataset_id, job.kind, job.status, job.params) == (ds.id, "train", "queued", RUN_PARAMS)
