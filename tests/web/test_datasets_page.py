"""/datasets: the table for everyone, the new-dataset form for engineers and admins."""

from sqlalchemy import func, select

from app.models import Dataset
from tests.builders import add_samples, make_dataset
from tests.web.session import htmx, login


def test_table_shows_counts_version_and_classes(client, db, annotator):
    ds = make_dataset(db, task="text", classes=["spam", "ham"], name="mail")
    add_samples(db, ds, [{"label": "spam"}, {"label": "ham"}, {"label": "ham", "split": "valid"},
                         {"label": "spam", "split": "test"}, {"label": None}, {"label": None}])
    ds.label_version = 7
    db.commit()
    login(client, annotator.user.username)
    html = client.get("/datasets").text
    row = html[html.index(f'<td class="strong"><a href="/datasets/{ds.id}">mail</a></td>'):]
    row = row[: row.index("</tr>")]
    cells = [c.split(">", 1)[1].split("<")[0] for c in row.split("<td")[1:]]
    assert "text" in row
    assert cells[2:] == ["2", "1", "1", "2", "v7", "2"]


def test_empty_state(client, annotator):
    login(client, annotator.user.username)
    assert "No datasets yet." in client.get("/datasets").text


def test_annotators_see_no_form_and_cannot_post(client, db, annotator):
    csrf = login(client, annotator.user.username)
    html = client.get("/datasets").text
    assert "New dataset" not in html and 'action="/datasets"' not in html
    r = client.post("/datasets", data={"name": "sneaky", "task": "text"}, headers=htmx(csrf))
    assert r.status_code == 403
    assert db.scalar(select(func.count()).select_from(Dataset)) == 0


def test_engineers_create_a_dataset_with_htmx(client, db, engineer):
    csrf = login(client, engineer.user.username)
    html = client.get("/datasets").text
    assert 'hx-post="/datasets"' in html and 'hx-target="#dataset-panel"' in html
    r = client.post("/datasets", data={"name": "birds", "task": "image", "classes": "crow, finch ,, wren"},
                    headers=htmx(csrf))
    assert r.status_code == 201, r.text
    assert r.text.lstrip().startswith('<div id="dataset-panel"'), "only the panel block comes back"
    assert "<html" not in r.text
    assert "Created dataset <strong>birds</strong>" in r.text
    assert ">birds</a></td>" in r.text
    assert 'name="name" value=""' in r.text, "the form is cleared"
    ds = db.scalar(select(Dataset).where(Dataset.name == "birds"))
    assert ds.task == "image" and ds.classes == ["crow", "finch", "wren"] and ds.created_by == engineer.user.id


def test_classes_are_optional(client, db, admin):
    csrf = login(client, admin.user.username)
    r = client.post("/datasets", data={"name": "later", "task": "tabular", "classes": " "}, headers=htmx(csrf))
    assert r.status_code == 201
    assert db.scalar(select(Dataset.classes).where(Dataset.name == "later")) == []


def test_validation_errors_are_shown_inline(client, db, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/datasets", data={"name": "  ", "task": "text", "classes": "a"}, headers=htmx(csrf))
    assert r.status_code == 422
    assert '<small id="name-error" class="field-error">name must not be blank</small>' in r.text
    assert "a classifier needs at least two classes" in r.text
    assert 'name="classes" value="a"' in r.text, "what was typed stays"
    r = client.post("/datasets", data={"name": "x", "task": "audio"}, headers=htmx(csrf))
    assert r.status_code == 422 and 'id="task-error"' in r.text
    r = client.post("/datasets", data={"name": "x", "task": "text", "classes": "a, a"}, headers=htmx(csrf))
    assert r.status_code == 422 and "class names must be unique" in r.text
    assert db.scalar(select(func.count()).select_from(Dataset)) == 0


def test_a_taken_name_is_an_inline_error(client, db, engineer):
    make_dataset(db, name="taken")
    csrf = login(client, engineer.user.username)
    r = client.post("/datasets", data={"name": "taken", "task": "text"}, headers=htmx(csrf))
    assert r.status_code == 422
    assert "already exists" in r.text and 'aria-invalid="true"' in r.text


def test_without_htmx_the_form_returns_the_whole_page(client, db, engineer):
    csrf = login(client, engineer.user.username)
    r = client.post("/datasets", data={"name": "plain", "task": "text", "csrf_token": csrf})
    assert r.status_code == 201
    assert r.text.startswith("<!doctype html>") and "Created dataset <strong>plain</strong>" in r.text
