"""The search pages: the form on a dataset (engineers only), and a search's trials."""

from __future__ import annotations

import re

from app.models import Job
from app.jobs.registry import run_job
from tests.builders import make_user
from tests.search.helpers import PRUNING_SEARCH, enqueue_search, local_ctx
from tests.training.factories import tabular_dataset
from tests.web.session import htmx, login


def test_engineers_get_the_form_and_the_dataset_link_annotators_neither(client, db):
    ds, _ = tabular_dataset(db)
    annotator = make_user(db, "annotator")
    login(client, annotator.user.username)
    assert f'href="/datasets/{ds.id}/search"' not in client.get(f"/datasets/{ds.id}").text
    r = client.get(f"/datasets/{ds.id}/search", headers={"Accept": "text/html"})
    assert r.status_code == 403

    engineer = make_user(db, "engineer")
    login(client, engineer.user.username)
    assert f'href="/datasets/{ds.id}/search"' in client.get(f"/datasets/{ds.id}").text
    r = client.get(f"/datasets/{ds.id}/search")
    assert r.status_code == 200
    for name in ("n_trials", "workers", "metric", "pruner", "timeout_s", "lr_low", "lr_high", "epochs_low",
                 "epochs_high", "batch_sizes", "ls_low", "ls_high"):
        assert f'name="{name}"' in r.text and f'id="h-{name}"' in r.text, name
    assert 'name="csrf_token"' in r.text and "<script>" not in r.text


def test_the_form_queues_a_search_or_names_the_settings_to_fix(client, db):
    ds, _ = tabular_dataset(db)
    engineer = make_user(db, "engineer")
    csrf = login(client, engineer.user.username)
    form = {"n_trials": "6", "workers": "2", "metric": "accuracy", "pruner": "hyperband", "timeout_s": "",
            "lr_low": "0.1", "lr_high": "0.001", "epochs_low": "2", "epochs_high": "4", "batch_sizes": "16, 32",
            "ls_low": "0.05", "ls_high": "0.1"}
    r = client.post(f"/datasets/{ds.id}/search", data=form, headers=htmx(csrf))
    assert r.status_code == 422
    assert "Learning rate to" in r.text and 'id="e-lr_high"' in r.text
    assert db.query(Job).count() == 0

    r = client.post(f"/datasets/{ds.id}/search", data={**form, "lr_high": "0.3", "batch_sizes": "16, x"}, headers=htmx(csrf))
    assert r.status_code == 422 and 'id="e-batch_sizes"' in r.text

    r = client.post(f"/datasets/{ds.id}/search", data={**form, "lr_high": "0.3", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    job = db.query(Job).one()
    assert r.headers["location"] == f"/jobs/{job.id}/search"
    p = job.params
    assert (job.kind, p["n_trials"], p["workers"], p["metric"], p["pruner"]) == ("search", 6, 2, "accuracy", "hyperband")
    assert p["space"]["lr"] == {"low": 0.1, "high": 0.3, "log": True}
    assert p["space"]["epochs"] == {"low": 2, "high": 4} and p["space"]["batch_size"] == {"choices": [16, 32]}
    assert "timeout_s" not in p

    # Without the CSRF token the post is refused.
    r = client.post(f"/datasets/{ds.id}/search", data=form, follow_redirects=False)
    assert r.status_code == 403


def test_the_search_page_lists_trials_marks_pruned_ones_highlights_the_best_and_trains_it(client, engine, settings, db):
    ds, _ = tabular_dataset(db)
    job_id = enqueue_search(db, ds.id, PRUNING_SEARCH)
    result = run_job(local_ctx(engine, settings, job_id, ds.id, PRUNING_SEARCH), "search")
    best = result["best"]["number"]

    annotator = make_user(db, "annotator")
    login(client, annotator.user.username)
    assert client.get(f"/jobs/{job_id}/search", headers={"Accept": "text/html"}).status_code == 403

    engineer = make_user(db, "engineer")
    csrf = login(client, engineer.user.username)
    r = client.get(f"/jobs/{job_id}/search")
    assert r.status_code == 200
    rows = re.findall(r'<tr id="trial-(\d+)" data-state="(\w+)"([^>]*)>', r.text)
    assert [int(n) for n, _, _ in rows] == [0, 1, 2, 3]
    states = {int(n): s for n, s, _ in rows}
    assert list(states.values()).count("pruned") == result["counts"]["pruned"] >= 1
    highlighted = [int(n) for n, _, extra in rows if "trial-best" in extra]
    assert highlighted == [best]
    assert 'class="pill pill-cancelled">pruned' in r.text
    # The job row was never settled (the search ran in-process), so the page keeps polling.
    assert f'hx-get="/jobs/{job_id}/search" hx-trigger="every 2s"' in r.text

    fragment = client.get(f"/jobs/{job_id}/search", headers=htmx())
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="search-live"') and "<html" not in fragment.text

    # Settled: the polling stops.
    db.query(Job).filter(Job.id == job_id).update({"status": "succeeded", "progress": 1.0, "result": result})
    db.commit()
    assert "hx-trigger" not in client.get(f"/jobs/{job_id}/search").text.split('id="search-live"', 1)[1].split(">", 1)[0]

    r = client.post(f"/jobs/{job_id}/search/train-best", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    train = db.query(Job).filter(Job.kind == "train").one()
    assert r.headers["location"] == f"/jobs/{train.id}"
    assert train.params == result["best"]["train_params"]

    listing = client.get(f"/datasets/{ds.id}/search").text
    assert f'href="/jobs/{job_id}/search"' in listing and "%.4f" % result["best"]["value"] in listing
