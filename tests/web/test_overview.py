"""/datasets/{id}: the overview of a dataset and its latest run, and the comparison as JSON."""

import json
import re
from html import unescape
from pathlib import Path

import pytest

from app.evaluation.metrics import classification_metrics
from app.models import Job, LabelEvent, Run, utcnow
from tests.builders import add_samples, make_dataset, make_user
from tests.web.session import htmx, login

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["cat", "dog", "sea lion"]
VALID_GIVEN = ["cat"] * 4 + ["dog"] * 4 + ["sea lion"] * 2
RUN1_VALID = ["cat", "cat", "dog", "dog", "dog", "dog", "cat", "dog", "sea lion", "cat"]
# The second run, after two relabels: cat [3 1 0], dog [0 4 0], sea lion [1 0 1].
RUN2_VALID = ["cat", "cat", "cat", "dog", "dog", "dog", "dog", "dog", "sea lion", "cat"]
TEST_GIVEN = ["cat", "dog", "sea lion"]
RUN2_TEST = ["cat", "cat", "sea lion"]

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S | re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.I)
INLINE_STYLE = re.compile(r"<[^>]+\sstyle\s*=", re.I)


def m(given, predicted, classes=CLASSES):
    return classification_metrics([classes.index(c) for c in given], [classes.index(c) for c in predicted], classes)


def history(models=("fold 1", "final"), epochs=2):
    return [
        {"model": model, "fold": i if model != "final" else None, "epoch": e, "train_loss": 1.0 / e,
         "valid_loss": 1.2 / e, "accuracy": 0.5 + 0.1 * e, "frozen": False, "seconds": 1.5}
        for i, model in enumerate(models)
        for e in range(1, epochs + 1)
    ]


def trained_dataset(db, runs: int = 2):
    """A dataset of cats, dogs and sea lions with `runs` (1 or 2) succeeded runs and two
    label changes between them; the second run also has test metrics."""
    ds = make_dataset(db, classes=CLASSES)
    rows = [{"label": c} for c in ["cat", "cat", "dog", "dog", "sea lion"]]
    rows += [{"label": c, "split": "valid"} for c in VALID_GIVEN]
    rows += [{"label": c, "split": "test"} for c in TEST_GIVEN]
    rows += [{"label": None}]
    samples = add_samples(db, ds, rows)
    made = []
    run1 = Run(dataset_id=ds.id, status="succeeded", params={"epochs": 2}, label_version=1,
               metrics={"valid": m(VALID_GIVEN, RUN1_VALID), "test": None}, history=history(), info={},
               finished_at=utcnow())
    db.add(run1)
    made.append(run1)
    if runs > 1:
        for version, (s, old, new) in enumerate([(samples[1], "cat", "dog"), (samples[3], "dog", "sea lion")], start=2):
            db.add(LabelEvent(dataset_id=ds.id, sample_id=s.id, old_label=old, new_label=new, old_split="train",
                              new_split="train", source="annotator", label_version=version))
        run2 = Run(dataset_id=ds.id, status="succeeded", params={"epochs": 3}, label_version=3,
                   metrics={"valid": m(VALID_GIVEN, RUN2_VALID), "test": m(TEST_GIVEN, RUN2_TEST)},
                   history=history(), info={}, finished_at=utcnow())
        db.add(run2)
        made.append(run2)
    ds.label_version = 3 if runs > 1 else 1
    db.commit()
    return ds, made


def json_block(html: str, block_id: str):
    match = re.search(rf'<script type="application/json" id="{block_id}">(.*?)</script>', html, re.S)
    assert match, f"no JSON block {block_id}"
    return json.loads(match.group(1))


def section(html: str, element_id: str, tag: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start: html.index(f"</{tag}>", start)]


def row_names(table: str) -> list[str]:
    return [unescape(n) for n in re.findall(r'<th scope="row"[^>]*>([^<]+)</th>', table)]


def test_header_shows_counts_version_and_the_latest_runs_metrics(client, db, annotator):
    ds, (_, run2) = trained_dataset(db)
    login(client, annotator.user.username)
    r = client.get(f"/datasets/{ds.id}")
    assert r.status_code == 200
    html = r.text
    assert f"<h1>{ds.name} <span class=\"tag\">tabular</span></h1>" in html
    counts = re.sub(r"\s+", " ", html)
    assert "Train <strong>5</strong>" in counts and "Valid <strong>10</strong>" in counts
    assert "Test <strong>3</strong>" in counts and "Unlabelled <strong>1</strong>" in counts
    assert "Label version <strong>v3</strong>" in counts
    valid = run2.metrics["valid"]
    assert f"{valid['accuracy'] * 100:.1f}%" in html  # 80.0%
    assert f"{valid['macro_f1']:.3f}" in html
    assert f"{run2.metrics['test']['macro_f1']:.3f}" in html
    # Deltas against the run before: valid accuracy went from 60% to 80%.
    assert "+20.0 pts" in html and "since run #" in html
    assert f"Run #{run2.id}" in html


def test_review_link_for_everyone_train_and_export_for_engineers(client, db, annotator, engineer):
    ds, _ = trained_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert f'href="/datasets/{ds.id}/review"' in html
    assert f"/datasets/{ds.id}/train" not in html and "/export" not in html

    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert f'href="/datasets/{ds.id}/train"' in html
    for fmt in ("csv", "jsonl", "parquet"):
        assert f'href="/api/v1/datasets/{ds.id}/export?format={fmt}"' in html


def test_per_class_table_lists_the_worst_valid_f1_first(client, db, annotator):
    ds, (_, run2) = trained_dataset(db)
    login(client, annotator.user.username)
    table = section(client.get(f"/datasets/{ds.id}").text, "per-class", "table")
    # run 2 on valid: sea lion F1 0.667, cat 0.750, dog 0.889
    assert row_names(table) == ["sea lion", "cat", "dog"]
    assert "Test F1" in table
    sea = table[table.index(">sea lion<"):]
    sea = sea[: sea.index("</tr>")]
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', sea)
    assert cells[:4] == ["1.000", "0.500", "0.667", "2"], "valid precision, recall, F1, support"
    assert cells[4:] == ["1.000", "1.000", "1.000", "1"], "test precision, recall, F1, support"
    assert f'href="/datasets/{ds.id}/review?label=sea+lion"' in sea


def test_confusion_cells_link_to_the_review_queue_for_that_pair(client, db, annotator):
    ds, _ = trained_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    matrix = section(html, "confusion", "table")
    links = re.findall(r'<a href="([^"]+)"[^>]*>(\d+)</a>', matrix)
    base = f"/datasets/{ds.id}/review?split=valid&amp;"
    # Off-diagonal cells with a count, and only those, are links: cat->dog 1, sea lion->cat 1,
    # each to the queue on the split the matrix shows (valid), not the queue's default (train).
    assert sorted(links) == sorted([
        (f"{base}label=cat&amp;predicted=dog", "1"),
        (f"{base}label=sea+lion&amp;predicted=cat", "1"),
    ])
    assert 'cell cell-right heat-4" title="3 of 4 cat predicted cat (75%)">3</td>' in matrix
    assert 'cell cell-right heat-5" title="4 of 4 dog predicted dog (100%)">4</td>' in matrix
    assert 'cell cell-wrong heat-5"' in matrix, "a quarter of the cats went to dog: the darkest error shade"
    assert matrix.count('class="cell heat-0"') == 4

    pairs = section(html, "confused-pairs", "ol")
    assert re.findall(r'<a href="([^"]+)">', pairs) == [
        f"{base}label=sea+lion&amp;predicted=cat",  # 1 of 2 sea lions (50%) ranks before 1 of 4 cats
        f"{base}label=cat&amp;predicted=dog",
    ]


def test_runs_over_time_and_the_comparison_with_the_previous_run(client, db, annotator):
    ds, (run1, run2) = trained_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    table = section(html, "history", "table")
    assert f"#{run1.id} <span class=\"muted\">v1</span>" in table and f"#{run2.id} <span class=\"muted\">v3</span>" in table
    dog = table[table.index(">dog<"):]
    dog = dog[: dog.index("</tr>")]
    before, after = run1.metrics["valid"]["per_class"]["dog"]["f1"], run2.metrics["valid"]["per_class"]["dog"]["f1"]
    assert f"{before:.3f}" in dog and f"{after:.3f}" in dog and f"{after - before:+.3f}" in dog
    labels_row = table[table.index("Labels changed"):]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", labels_row[: labels_row.index("</tr>")])[:2] == ["–", "2"]

    compare = section(html, "compare", "table")
    assert "<strong>2</strong> labels changed between label versions v1 and v3" in re.sub(r"\s+", " ", html)
    sea = compare[compare.index(">sea lion<"):]
    sea = sea[: sea.index("</tr>")]
    assert re.findall(r'<td class="num">(\d*)</td>', sea) == ["1", ""], "one label moved into sea lion, none out"
    cat = compare[compare.index(">cat<"):]
    assert re.findall(r'<td class="num">(\d*)</td>', cat[: cat.index("</tr>")]) == ["", "1"]


def test_chart_data_is_json_in_the_page_and_every_canvas_has_its_block(client, db, annotator):
    ds, (_, run2) = trained_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    distribution = json_block(html, "chart-distribution")
    assert distribution["labels"] == CLASSES
    assert distribution["series"] == [
        {"name": "train", "values": [2, 2, 1]},
        {"name": "valid", "values": [4, 4, 2]},
        {"name": "test", "values": [1, 1, 1]},
    ]
    per_class = json_block(html, "chart-per-class")
    assert per_class["labels"] == ["sea lion", "cat", "dog"]
    assert [s["name"] for s in per_class["series"]] == ["valid F1", "test F1"]
    history_chart = json_block(html, "chart-history")
    assert len(history_chart["labels"]) == 2
    assert {s["name"] for s in history_chart["series"]} == set(CLASSES)
    for source in re.findall(r'<canvas data-chart="[a-z_]+" data-source="([^"]+)"', html):
        json_block(html, source)
    assert "/static/vendor/chart.umd.min.js" in html and "/static/js/charts.js" in html


def test_the_page_has_no_inline_script_handler_or_style(client, db, engineer):
    ds, _ = trained_dataset(db)
    login(client, engineer.user.username)
    for html in (client.get(f"/datasets/{ds.id}").text, client.get(f"/datasets/{make_dataset(db).id}").text):
        for attrs, body in SCRIPT.findall(html):
            if 'type="application/json"' in attrs:
                json.loads(body)  # data, which browsers never run
                assert "</" not in body
            else:
                assert 'src="/static/' in attrs and not body.strip()
        assert not INLINE_HANDLER.search(html)
        assert not INLINE_STYLE.search(html)


def test_json_data_cannot_close_its_script_tag(client, db, annotator):
    ds = make_dataset(db, classes=["</script><script>alert(1)</script>", "b"])
    add_samples(db, ds, [{"label": "b"}])
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "<script>alert(1)" not in html
    assert json_block(html, "chart-distribution")["labels"][0] == "</script><script>alert(1)</script>"


def test_empty_dataset_asks_for_an_import(client, db, engineer, annotator):
    ds = make_dataset(db)
    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "No samples yet." in html and f"curate import {ds.id} FILE" in html
    assert "<canvas" not in html
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "No samples yet." in html and "An engineer imports the data" in html


def test_without_a_run_engineers_are_asked_to_train(client, db, engineer, annotator):
    ds = make_dataset(db, classes=CLASSES)
    add_samples(db, ds, [{"label": "cat"}, {"label": "dog", "split": "valid"}])
    db.add(Run(dataset_id=ds.id, status="failed", params={}, label_version=0, history=[], info={}))
    db.commit()
    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "No model trained yet." in html
    assert f'<a class="button button-primary" href="/datasets/{ds.id}/train">Train a model</a>' in html
    assert 'data-chart="distribution"' in html, "the class distribution needs no run"
    assert 'id="confusion"' not in html and 'id="per-class"' not in html and 'data-chart="per_class"' not in html
    assert '<div class="grid-1">' in html, "the distribution takes the whole width"
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "No model trained yet." in html and "An engineer trains the first model" in html


def test_a_running_job_shows_its_progress_and_polls_until_it_ends(client, db, annotator):
    ds = make_dataset(db, classes=CLASSES)
    add_samples(db, ds, [{"label": "cat"}])
    job = Job(dataset_id=ds.id, kind="train", params={}, status="running", progress=0.37, message="fold 2/5: epoch 3/8",
              attempts=1, max_attempts=3, cancel_requested=False)
    db.add(job)
    db.commit()
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    banner = section(html, "activity", "div")
    assert f'hx-get="/datasets/{ds.id}/activity?job={job.id}" hx-trigger="every 2s"' in banner
    assert "37%" in banner and "fold 2/5: epoch 3/8" in banner and f'href="/jobs/{job.id}"' in banner
    assert "The job above is training the first one" in html

    polled = client.get(f"/datasets/{ds.id}/activity?job={job.id}", headers=htmx())
    assert polled.status_code == 200 and polled.text.lstrip().startswith('<div id="activity"')
    assert "hx-trigger" in polled.text

    job.status, job.progress = "succeeded", 1.0
    db.commit()
    done = client.get(f"/datasets/{ds.id}/activity?job={job.id}", headers=htmx()).text
    assert "hx-trigger" not in done, "polling stops once the job has ended"
    assert "succeeded" in done and "Show the new results" in done
    assert client.get(f"/datasets/{ds.id}/activity?job={job.id + 1}", headers=htmx()).status_code == 404
    plain = client.get(f"/datasets/{ds.id}/activity?job={job.id}", follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == f"/datasets/{ds.id}"


def test_the_compare_form_swaps_in_another_pair_of_runs(client, db, annotator):
    ds, (run1, run2) = trained_dataset(db)
    login(client, annotator.user.username)
    r = client.get(f"/datasets/{ds.id}?run={run1.id}&base={run2.id}", headers=htmx())
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<section id="compare-panel"') and "<html" not in r.text
    assert f"Run #{run1.id} against run #{run2.id}" in r.text
    other, _ = trained_dataset(db, runs=1)
    foreign = Run(dataset_id=other.id, status="succeeded", params={}, label_version=0, history=[], info={})
    db.add(foreign)
    db.commit()
    assert client.get(f"/datasets/{ds.id}?base={foreign.id}", headers=htmx()).status_code == 404


def test_a_single_run_has_no_comparison_yet(client, db, annotator):
    ds, (run1,) = trained_dataset(db, runs=1)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert "The first run of this dataset" in html
    assert 'data-chart="history"' not in html, "one point is no line"
    assert "since run #" not in html


def test_compare_api_matches_the_page_and_annotators_may_read_it(client, db):
    ds, (run1, run2) = trained_dataset(db)
    reader = make_user(db, "annotator")
    r = client.get(f"/api/v1/datasets/{ds.id}/compare", headers=reader.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["run_id"], body["base_run_id"], body["split"]) == (run2.id, run1.id, "valid")
    assert body["labels_changed"] == 2
    assert body["moves"] == [{"old_label": "cat", "new_label": "dog", "count": 1},
                             {"old_label": "dog", "new_label": "sea lion", "count": 1}]
    dog = body["per_class"]["dog"]
    assert dog["f1"] == pytest.approx(run2.metrics["valid"]["per_class"]["dog"]["f1"])
    assert dog["delta"] == pytest.approx(dog["f1"] - dog["base_f1"])
    assert (dog["labels_in"], dog["labels_out"]) == (1, 1)
    assert body["accuracy_delta"] == pytest.approx(0.2)

    test = client.get(f"/api/v1/datasets/{ds.id}/compare?split=test", headers=reader.headers).json()
    assert test["split"] == "test" and test["base_accuracy"] is None and test["accuracy"] == pytest.approx(2 / 3)
    swapped = client.get(f"/api/v1/datasets/{ds.id}/compare?run={run1.id}&base={run2.id}", headers=reader.headers).json()
    assert swapped["per_class"]["dog"]["delta"] == pytest.approx(-dog["delta"])
    first = client.get(f"/api/v1/datasets/{ds.id}/compare?run={run1.id}", headers=reader.headers).json()
    assert first["base_run_id"] is None and first["labels_changed"] is None

    assert client.get(f"/api/v1/datasets/{ds.id}/compare?run=999999", headers=reader.headers).status_code == 404
    assert client.get(f"/api/v1/datasets/{ds.id}/compare?split=train", headers=reader.headers).status_code == 422
    empty = make_dataset(db)
    r = client.get(f"/api/v1/datasets/{empty.id}/compare", headers=reader.headers)
    assert r.status_code == 409 and "no finished run" in r.json()["detail"]
    assert client.get("/api/v1/datasets/999999/compare", headers=reader.headers).status_code == 404


def test_too_many_classes_for_a_matrix_still_list_the_most_confused_pairs(client, db, annotator):
    classes = [f"c{i:02d}" for i in range(31)]
    ds = make_dataset(db, classes=classes)
    add_samples(db, ds, [{"label": "c00", "split": "valid"}])
    given = [c for c in classes for _ in range(2)]
    predicted = [c if i % 2 == 0 else classes[(k + 1) % 31] for k, c in enumerate(classes) for i in range(2)]
    db.add(Run(dataset_id=ds.id, status="succeeded", params={}, label_version=0, history=[], info={},
               metrics={"valid": m(given, predicted, classes), "test": None}))
    db.commit()
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    assert 'id="confusion"' not in html and "31 classes are too many to draw as a table" in html
    pairs = section(html, "confused-pairs", "ol")
    assert pairs.count("<li>") == 10
    assert f'href="/datasets/{ds.id}/review?split=valid&amp;label=c00&amp;predicted=c01"' in pairs
    assert 'class="chart-box chart-box-xl"' in html


def test_unknown_dataset_is_a_404_page(client, annotator):
    login(client, annotator.user.username)
    r = client.get("/datasets/999999", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "Not found" in r.text


def test_the_datasets_table_links_to_each_overview(client, db, annotator):
    ds = make_dataset(db, name="linked")
    login(client, annotator.user.username)
    assert f'<a href="/datasets/{ds.id}">linked</a>' in client.get("/datasets").text


def test_vendored_chart_js_is_the_pinned_package():
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["chart.js"]
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    assert lock["node_modules/chart.js"]["version"] == pinned
    assert lock["node_modules/chart.js"]["license"] == "MIT"
    head = (ROOT / "static/vendor/chart.umd.min.js").read_text()[:200]
    assert f"Chart.js v{pinned}" in head and "Released under the MIT License" in head
    package = json.loads((ROOT / "package.json").read_text())
    assert package["vendor"]["chart.js/dist/chart.umd.min.js"] == "chart.umd.min.js"
    assert "static/vendor/" in package["scripts"]["vendor"]


@pytest.mark.parametrize(("package", "files", "licence"), [
    ("swagger-ui-dist", ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui.LICENSE", "swagger-ui.NOTICE"), "Apache-2.0"),
    ("redoc", ("redoc.standalone.js", "redoc.LICENSE"), "MIT"),
])
def test_vendored_api_docs_viewers_are_the_pinned_packages(package, files, licence):
    manifest = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"][f"node_modules/{package}"]
    assert lock["version"] == manifest["devDependencies"][package] and lock["license"] == licence
    vendored = {to for source, to in manifest["vendor"].items() if source.startswith(f"{package}/")}
    assert vendored == set(files)
    for name in files:
        assert (ROOT / "static/vendor" / name).stat().st_size > 0
