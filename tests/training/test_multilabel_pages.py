"""The pages and endpoints that read a run answer for a multi-label run too (no 500s)."""

from fastapi.testclient import TestClient

from app.jobs.context import LocalJobContext
from app.jobs.registry import run_job
from tests.builders import make_user
from tests.training.factories import multilabel_tabular_dataset
from tests.web.session import login


def test_a_multilabel_run_reads_through_every_page_and_endpoint(engine, settings, db, app, client, engineer):
    ds, _ = multilabel_tabular_dataset(db, counts={"train": 30, "valid": 12, "test": 6, "unlabelled": 4})
    ids = []
    for seed in (0, 1):
        ctx = LocalJobContext(engine=engine, settings=settings, dataset_id=ds.id,
                              params={"epochs": 2, "lr": 3e-2, "scoring": "in_sample", "seed": seed})
        ids.append(run_job(ctx, "train")["run_id"])
    api = f"/api/v1/datasets/{ds.id}"
    h = engineer.headers
    for url in (f"{api}/runs", f"/api/v1/runs/{ids[1]}", f"{api}/compare", f"{api}/compare?run={ids[1]}&base={ids[0]}",
                f"{api}/advice", f"{api}/health", f"{api}/samples?order=priority", f"{api}/queue",
                f"{api}/export?format=csv", f"{api}/export?format=jsonl"):
        r = client.get(url, headers=h)
        assert r.status_code < 500, (url, r.status_code, r.text[:300])
        assert r.status_code in (200, 409), (url, r.status_code, r.text[:300])
    account = make_user(db, "engineer")
    browser = TestClient(app)
    login(browser, account.user.username)
    for url in (f"/datasets/{ds.id}", f"/datasets/{ds.id}/confusion", f"/datasets/{ds.id}/review",
                f"/datasets/{ds.id}/train", f"/datasets/{ds.id}/experiments"):
        r = browser.get(url)
        assert r.status_code < 500, (url, r.status_code, r.text[-500:])


def test_class_counts_of_a_multilabel_dataset_count_each_tag_of_a_set(db):
    from app.evaluation.compare import class_distribution
    from tests.builders import add_samples, make_dataset

    ds = make_dataset(db, "tabular", classes=["a", "b", "c"])
    ds.multilabel = True
    db.commit()
    add_samples(db, ds, [{"label": "a|b"}, {"label": "a"}, {"label": ""}, {"label": "b|c", "split": "valid"},
                         {"label": None}])
    counts = class_distribution(db, ds)
    assert counts["train"] == {"a": 2, "b": 1, "c": 0}
    assert counts["valid"] == {"a": 0, "b": 1, "c": 1}
