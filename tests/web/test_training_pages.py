"""The training form, the job page and a dataset's jobs list."""

import json
import re
from typing import Literal

from pydantic import Field
from sqlalchemy import func, select

from app.models import Job, JobLog, Run
from app.training.recipe import IMAGE_ARCHS, LOSS_NAMES, TASK_DEFAULTS, TASK_FIELDS, TASK_ONLY_FIELDS, Recipe
from app.web import training
from tests.builders import add_samples, make_dataset
from tests.web.session import htmx, login


def form_of(html: str) -> str:
    start = html.index('<form id="train-form"')
    return html[start: html.index("</form>", start)]


def field_html(form: str, name: str) -> str:
    """The markup of one field: from its input to its help line."""
    start = form.index(f'name="{name}"')
    start = form.rfind('<div class="field', 0, start)
    return form[start: form.index("</small>", form.index(f'id="h-{name}"')) + len("</small>")]


def post_form(client, ds, data, csrf, hx=True):
    headers = htmx(csrf) if hx else {}
    body = dict(data)
    if not hx:
        body["csrf_token"] = csrf
    return client.post(f"/datasets/{ds.id}/train", data=body, headers=headers, follow_redirects=False)


def job_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Job))


def make_job(db, ds, status="running", progress=0.4, run=None, **values):
    job = Job(dataset_id=ds.id, kind="train", params={"epochs": 2}, status=status, progress=progress,
              attempts=1, max_attempts=3, cancel_requested=False, run_id=run.id if run else None, **values)
    db.add(job)
    db.commit()
    return job


# --- the form --------------------------------------------------------------------------------


def test_the_form_has_every_recipe_field_of_the_task_with_its_default_and_help(client, db, engineer):
    ds = make_dataset(db, task="image", classes=["a", "b"])
    login(client, engineer.user.username)
    r = client.get(f"/datasets/{ds.id}/train")
    assert r.status_code == 200
    form = form_of(r.text)
    for name in Recipe.model_fields:
        present = f'name="{name}"' in form
        assert present == (name not in TASK_ONLY_FIELDS or name in TASK_FIELDS["image"]), name
        if present:
            assert f'<small id="h-{name}" class="field-help">' in field_html(form, name), f"{name} has no help line"
    arch = field_html(form, "arch")
    assert re.findall(r'<option value="([^"]*)"', arch) == list(IMAGE_ARCHS)
    assert '<option value="resnet18" selected>' in arch
    assert 'type="number" id="f-epochs" name="epochs" value="8"' in form
    assert 'min="1"' in field_html(form, "epochs") and 'max="1000"' in field_html(form, "epochs")
    assert 'name="image_size" value="32"' in form
    assert 'name="lr" value=""' in form and 'placeholder="found with lr_find"' in form
    assert 'step="any"' in field_html(form, "lr")
    augment = field_html(form, "augment")
    assert '<input type="hidden" name="augment" value="false">' in augment
    assert 'type="checkbox" id="f-augment" name="augment" value="true" checked' in augment
    scoring = field_html(form, "scoring")
    assert re.findall(r'<option value="([^"]*)"', scoring) == ["out_of_fold", "in_sample"]
    assert '<option value="out_of_fold" selected>' in scoring
    loss = field_html(form, "loss")
    assert re.findall(r'<option value="([^"]*)"', loss) == ["", *LOSS_NAMES]
    assert '<option value="" selected>default</option>' in loss
    assert f'hx-post="/datasets/{ds.id}/train"' in form and 'name="csrf_token"' in form


def test_tabular_datasets_get_their_own_fields(client, db, admin):
    ds = make_dataset(db, task="tabular")
    login(client, admin.user.username)
    form = form_of(client.get(f"/datasets/{ds.id}/train").text)
    assert 'name="layers" value="200, 100"' in form
    assert 'name="image_size"' not in form and 'name="seq_len"' not in form
    assert re.findall(r'<option value="([^"]*)"', field_html(form, "arch")) == ["mlp"]
    assert f'value="{TASK_DEFAULTS["tabular"]["epochs"]}"' in field_html(form, "epochs")


def test_fields_added_to_the_recipe_appear_on_their_own(monkeypatch):
    class Later(Recipe):
        warmup: Literal["none", "linear"] = "linear"
        mixup: bool = False
        dropout: float | None = Field(default=None, ge=0, le=0.9, description="dropout before the head")

    monkeypatch.setattr(training, "Recipe", Later)
    fields = {f.name: f for f in training.recipe_fields("text")}
    assert fields["warmup"].kind == "select" and fields["warmup"].options == [("none", "none"), ("linear", "linear")]
    assert fields["warmup"].value == "linear" and not fields["warmup"].main
    assert fields["mixup"].kind == "bool" and fields["mixup"].checked is False
    assert fields["dropout"].kind == "float" and (fields["dropout"].min, fields["dropout"].max) == (0, 0.9)
    assert fields["dropout"].help == "dropout before the head"
    assert fields["seq_len"].value == "72" and "layers" not in fields


def test_posting_the_form_queues_a_train_job_with_its_params(client, db, engineer):
    ds = make_dataset(db, task="image", classes=["a", "b"])
    csrf = login(client, engineer.user.username)
    data = {"arch": "resnet34", "epochs": "3", "batch_size": "32", "lr": "", "scoring": "in_sample", "folds": "5",
            "image_size": "48", "augment": ["false", "true"], "pretrained": "false", "seed": "7", "loss": "",
            "label_smoothing": "", "early_stopping": "2", "precision": "fp32"}
    r = post_form(client, ds, data, csrf)
    assert r.status_code == 201, r.text
    job = db.scalar(select(Job).order_by(Job.id.desc()))
    assert r.headers["hx-redirect"] == f"/jobs/{job.id}"
    assert (job.kind, job.dataset_id, job.status, job.created_by) == ("train", ds.id, "queued", engineer.user.id)
    assert job.params == {"arch": "resnet34", "epochs": 3, "batch_size": 32, "scoring": "in_sample", "folds": 5,
                          "image_size": 48, "augment": True, "pretrained": False, "seed": 7, "early_stopping": 2,
                          "precision": "fp32"}
    log = db.scalars(select(JobLog.message).where(JobLog.job_id == job.id)).all()
    assert log == [f"queued by {engineer.user.username}"], "queued by the same service as the REST route"
    api = client.get(f"/api/v1/jobs/{job.id}").json()
    assert api["params"] == job.params


def test_without_htmx_the_form_redirects_to_the_job_page(client, db, engineer):
    ds = make_dataset(db, task="tabular")
    csrf = login(client, engineer.user.username)
    r = post_form(client, ds, {"epochs": "2", "layers": "64, 32"}, csrf, hx=False)
    assert r.status_code == 303
    job = db.scalar(select(Job))
    assert r.headers["location"] == f"/jobs/{job.id}"
    assert job.params == {"epochs": 2, "layers": [64, 32]}


def test_invalid_params_are_shown_inline_and_queue_nothing(client, db, engineer):
    ds = make_dataset(db, task="image", classes=["a", "b"])
    csrf = login(client, engineer.user.username)
    r = post_form(client, ds, {"epochs": "0", "batch_size": "many", "lr": "0.01"}, csrf)
    assert r.status_code == 422
    assert r.text.lstrip().startswith('<form id="train-form"') and "<html" not in r.text
    assert '<small id="e-batch_size" class="field-error">Must be a whole number or auto.</small>' in r.text
    assert "<p>Check this setting: Batch size.</p>" in r.text
    assert 'name="batch_size" value="many"' in r.text and 'name="lr" value="0.01"' in r.text, "what was typed stays"

    r = post_form(client, ds, {"epochs": "0", "lr": "0.01"}, csrf)
    assert r.status_code == 422
    epochs = field_html(r.text, "epochs")
    assert 'aria-invalid="true"' in epochs
    assert '<small id="e-epochs" class="field-error">Input should be greater than or equal to 1</small>' in r.text

    r = post_form(client, ds, {"arch": "mlp"}, csrf)
    assert r.status_code == 422
    assert 'id="e-arch" class="field-error">For image datasets one of resnet18' in r.text
    r = post_form(client, ds, {"folds": "50"}, csrf)
    assert r.status_code == 422
    assert 'id="e-folds" class="field-error">Input should be less than or equal to 20<' in r.text

    # A rule across two fields: the message goes to the field it names.
    r = post_form(client, ds, {"loss": "cross_entropy", "label_smoothing": "0.2"}, csrf)
    assert r.status_code == 422
    assert ('<small id="e-label_smoothing" class="field-error">label_smoothing needs loss '
            '&#39;label_smoothing&#39; (or leave loss unset)</small>') in r.text

    r = post_form(client, ds, {"seed": "-1", "epochs": "1001", "loss": ""}, csrf)
    assert "<p>Check these settings: Epochs, Seed.</p>" in r.text
    assert '<option value="" selected>default</option>' in field_html(r.text, "loss"), "an untouched default stays so"
    assert r.status_code == 422 and 'id="e-seed"' in r.text
    assert '<details class="more-options" open>' in r.text, "an error under More options opens it"
    assert job_count(db) == 0


def test_an_unticked_checkbox_sends_false(client, db, engineer):
    ds = make_dataset(db, task="text", classes=["a", "b"])
    csrf = login(client, engineer.user.username)
    assert post_form(client, ds, {"pretrained": "false"}, csrf).status_code == 201
    assert db.scalar(select(Job)).params == {"pretrained": False}


def test_annotators_cannot_open_or_post_the_form_and_see_no_train_link(client, db, annotator):
    ds = make_dataset(db, task="tabular")
    add_samples(db, ds, [{"label": "a"}])
    csrf = login(client, annotator.user.username)
    assert client.get(f"/datasets/{ds.id}/train", headers={"Accept": "text/html"}).status_code == 403
    r = post_form(client, ds, {"epochs": "2"}, csrf)
    assert r.status_code == 403
    assert job_count(db) == 0
    assert "/train" not in client.get(f"/datasets/{ds.id}").text
    assert "/train" not in client.get(f"/datasets/{ds.id}/jobs").text


def test_the_form_needs_the_csrf_token(client, db, engineer):
    ds = make_dataset(db, task="tabular")
    login(client, engineer.user.username)
    r = client.post(f"/datasets/{ds.id}/train", data={"epochs": "2"}, headers={"HX-Request": "true"})
    assert r.status_code == 403 and job_count(db) == 0


def test_unknown_dataset_is_404(client, engineer):
    login(client, engineer.user.username)
    assert client.get("/datasets/999999/train").status_code == 404


# --- the job page ----------------------------------------------------------------------------


def test_a_running_job_shows_progress_epochs_log_and_polls(client, db, engineer):
    ds = make_dataset(db, task="tabular")
    history = [
        {"model": "fold 1", "fold": 0, "epoch": 1, "train_loss": 0.9, "valid_loss": 0.8, "accuracy": 0.6, "frozen": False, "seconds": 2.0},
        {"model": "fold 1", "fold": 0, "epoch": 2, "train_loss": 0.5, "valid_loss": 0.55, "accuracy": 0.75, "frozen": False, "seconds": 2.0},
    ]
    run = Run(dataset_id=ds.id, status="running", params={}, label_version=0, history=history, info={})
    db.add(run)
    db.commit()
    job = make_job(db, ds, progress=0.426, run=run, message="fold 1/5: epoch 2/3")
    db.add(JobLog(job_id=job.id, level="warning", message="pretrained weights unavailable"))
    db.commit()
    csrf = login(client, engineer.user.username)
    r = client.get(f"/jobs/{job.id}")
    assert r.status_code == 200
    html = r.text
    assert f'hx-get="/jobs/{job.id}" hx-trigger="every 1s"' in html
    assert f'hx-get="/jobs/{job.id}?part=detail" hx-trigger="every 2s"' in html
    assert '<progress id="job-progress" class="progress-running" value="42" max="100"' in html
    assert ">42%<" in html and "fold 1/5: epoch 2/3" in html
    epochs = html[html.index('id="epochs"'): html.index("</table>", html.index('id="epochs"'))]
    assert epochs.count("<tr>") == 3, "a header and one row per epoch"
    assert "train loss" in epochs and "valid loss" in epochs and "accuracy" in epochs
    assert "0.5500" in epochs and "0.7500" in epochs
    assert "pretrained weights unavailable" in html and 'class="log-warning"' in html
    assert f'hx-post="/jobs/{job.id}/cancel"' in html and "Cancel job" in html
    assert f'data-job="{job.id}"' in html and 'data-finished="false"' in html
    assert "/static/js/job.js" in html

    live = client.get(f"/jobs/{job.id}", headers=htmx(csrf))
    assert live.text.lstrip().startswith('<section id="job-live"') and "<html" not in live.text
    detail = client.get(f"/jobs/{job.id}?part=detail", headers=htmx(csrf))
    assert detail.text.lstrip().startswith('<div id="job-detail"') and "0.5500" in detail.text


def test_a_succeeded_job_shows_100_percent_and_stops_polling(client, db, annotator):
    ds = make_dataset(db, task="tabular", classes=["a", "b"])
    metrics = {"valid": {"accuracy": 0.9, "macro_f1": 0.875}, "test": None}
    run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=0, history=[], info={}, metrics=metrics)
    db.add(run)
    db.commit()
    # The last progress report said 97%; the job is done all the same.
    job = make_job(db, ds, status="succeeded", progress=0.97, run=run)
    login(client, annotator.user.username)
    html = client.get(f"/jobs/{job.id}").text
    assert 'value="100" max="100"' in html and ">100%<" in html
    assert "hx-trigger" not in html, "nothing polls once the job has ended"
    assert 'data-finished="true"' in html
    assert "valid accuracy 90.0%" in html and "macro F1 0.875" in html
    assert "Cancel job" not in html, "annotators cannot cancel, and a finished job has nothing to cancel"


def test_a_failed_job_shows_its_error(client, db, engineer):
    ds = make_dataset(db)
    job = make_job(db, ds, status="failed", progress=0.3, error="RuntimeError: out of memory")
    login(client, engineer.user.username)
    html = client.get(f"/jobs/{job.id}").text
    assert "RuntimeError: out of memory" in html and "progress-failed" in html and ">30%<" in html
    assert "Cancel job" not in html and "hx-trigger" not in html


def test_cancel_from_the_job_page(client, db, engineer, annotator):
    ds = make_dataset(db)
    queued = make_job(db, ds, status="queued", progress=0.0)
    csrf = login(client, annotator.user.username)
    assert "Cancel job" not in client.get(f"/jobs/{queued.id}").text
    assert client.post(f"/jobs/{queued.id}/cancel", headers=htmx(csrf)).status_code == 403

    csrf = login(client, engineer.user.username)
    assert client.post(f"/jobs/{queued.id}/cancel", headers={"HX-Request": "true"}).status_code == 403, "no CSRF token"
    r = client.post(f"/jobs/{queued.id}/cancel", headers=htmx(csrf))
    assert r.status_code == 200 and r.text.lstrip().startswith('<section id="job-live"')
    assert "pill-cancelled" in r.text and "hx-trigger" not in r.text
    db.expire_all()
    assert db.get(Job, queued.id).status == "cancelled"

    running = make_job(db, ds, status="running")
    r = client.post(f"/jobs/{running.id}/cancel", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{running.id}"
    db.expire_all()
    assert db.get(Job, running.id).cancel_requested is True
    html = client.get(f"/jobs/{running.id}").text
    assert "running, cancelling" in html and "Cancel job" not in html

    done = make_job(db, ds, status="succeeded", progress=1.0)
    assert client.post(f"/jobs/{done.id}/cancel", headers=htmx(csrf)).status_code == 409


def test_the_pages_have_no_inline_script_handler_or_style(client, db, engineer):
    ds = make_dataset(db, task="text", classes=["a", "b"])
    run = Run(dataset_id=ds.id, status="running", params={}, label_version=0, info={},
              history=[{"model": "final", "fold": None, "epoch": 1, "train_loss": 0.5, "valid_loss": 0.6}])
    db.add(run)
    db.commit()
    job = make_job(db, ds, run=run)
    login(client, engineer.user.username)
    for url in (f"/datasets/{ds.id}/train", f"/jobs/{job.id}", f"/datasets/{ds.id}/jobs"):
        html = client.get(url).text
        for attrs, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
            if 'type="application/json"' in attrs:
                assert "</" not in body and json.loads(body)["history"][0]["valid_loss"] == 0.6
            else:
                assert 'src="/static/' in attrs and not body.strip(), url
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I), url
        assert not re.search(r"<[^>]+\sstyle\s*=", html, re.I), url


def test_unknown_job_is_404(client, annotator):
    login(client, annotator.user.username)
    assert client.get("/jobs/999999", headers={"Accept": "text/html"}).status_code == 404


# --- the jobs list ---------------------------------------------------------------------------


def test_the_jobs_list_links_every_job_and_refreshes_while_one_is_active(client, db, engineer):
    ds = make_dataset(db)
    first = make_job(db, ds, status="succeeded", progress=1.0, created_by=engineer.user.id)
    second = make_job(db, ds, status="running", progress=0.5)
    other = make_job(db, make_dataset(db), status="queued")
    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}/jobs").text
    assert f'href="/jobs/{first.id}"' in html and f'href="/jobs/{second.id}"' in html
    assert f'href="/jobs/{other.id}"' not in html
    assert html.index(f"#{second.id}<") < html.index(f"#{first.id}<"), "newest first"
    assert f'hx-get="/datasets/{ds.id}/jobs" hx-trigger="every 2s"' in html
    assert f"<td>{engineer.user.username}</td>" in html and 'value="50" max="100"' in html
    assert f'href="/datasets/{ds.id}/train"' in html

    second.status = "succeeded"
    db.commit()
    fragment = client.get(f"/datasets/{ds.id}/jobs", headers=htmx()).text
    assert fragment.lstrip().startswith('<section id="jobs-table"') and "hx-trigger" not in fragment


def test_a_dataset_without_jobs(client, db, annotator):
    ds = make_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}/jobs").text
    assert "No jobs yet." in html and "An engineer starts training" in html
