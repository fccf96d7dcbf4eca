"""Pages a new user tripped on: the confusion matrix's split, the advisor's layout, the search
trials' headers, the job log's markup and the training form's words."""

from __future__ import annotations

import re
from html import unescape

from app.evaluation import compare as cmp
from app.evaluation.metrics import classification_metrics
from app.models import LabelEvent, Run, utcnow
from tests.advisor.builders import make_run, metrics_from
from tests.advisor.test_advice import CLASSES as ADVICE_CLASSES
from tests.advisor.test_advice import MATRIX as ADVICE_MATRIX
from tests.advisor.test_advice import TRAIN as ADVICE_TRAIN
from tests.builders import add_samples, make_dataset
from tests.web.session import htmx, login
from tests.web.test_overview import ROOT, section, trained_dataset
from tests.web.test_training_pages import form_of

# --- the confusion matrix: valid or test, and its links follow ------------------------------


def cell_links(html: str) -> list[str]:
    return [unescape(u) for u in re.findall(r'<a href="([^"]+)"[^>]*>\d+</a>', section(html, "confusion", "table"))]


def test_the_matrix_links_open_the_queue_on_its_split_and_switch_to_test(client, db, annotator):
    ds, _ = trained_dataset(db)
    login(client, annotator.user.username)
    base = f"/datasets/{ds.id}/review?split="

    html = client.get(f"/datasets/{ds.id}").text
    panel = section(html, "confusion-panel", "section")
    assert "valid, rows: given label" in panel
    assert sorted(cell_links(html)) == [f"{base}valid&label=cat&predicted=dog", f"{base}valid&label=sea+lion&predicted=cat"]
    switch = re.findall(r'<a href="([^"]+)" data-split="(\w+)"\s+hx-get="([^"]+)"[^>]*?( aria-current="true")?>', panel)
    assert switch == [
        (f"/datasets/{ds.id}?matrix=valid#confusion-panel", "valid", f"/datasets/{ds.id}/confusion?split=valid", ' aria-current="true"'),
        (f"/datasets/{ds.id}?matrix=test#confusion-panel", "test", f"/datasets/{ds.id}/confusion?split=test", ""),
    ]

    # On test (cat, dog, sea lion predicted cat, cat, sea lion) the one confusion is dog -> cat.
    html = client.get(f"/datasets/{ds.id}?matrix=test").text
    assert "test, rows: given label" in section(html, "confusion-panel", "section")
    assert cell_links(html) == [f"{base}test&label=dog&predicted=cat"]
    pairs = [unescape(u) for u in re.findall(r'<a href="([^"]+)">', section(html, "confused-pairs", "ol"))]
    assert pairs == [f"{base}test&label=dog&predicted=cat"]
    assert 'id="confusion-panel" data-split="test"' in html

    # The switch's request gets the panel alone; a plain request goes to the overview on that split.
    fragment = client.get(f"/datasets/{ds.id}/confusion?split=test", headers=htmx())
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div class="grid-confusion" id="confusion-panel" data-split="test">')
    assert "<html" not in fragment.text and cell_links(fragment.text) == [f"{base}test&label=dog&predicted=cat"]
    r = client.get(f"/datasets/{ds.id}/confusion?split=test", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/datasets/{ds.id}?matrix=test#confusion-panel"
    assert client.get(f"/datasets/{ds.id}?matrix=train").status_code == 422


def test_a_run_without_test_metrics_offers_no_switch(client, db, annotator):
    ds, _ = trained_dataset(db, runs=1)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}?matrix=test").text
    assert "valid, rows: given label" in html, "no test matrix: the valid one shows"
    assert 'class="split-switch"' not in html
    assert all("split=valid&" in u for u in cell_links(html))


# --- labels changed between runs: net per sample, undo churn left out ------------------------


def churned_dataset(db, versions=(1, 4, 6)):
    """Five samples whose labels move between label versions 1 and 6, undone twice; a run
    on each of `versions` (in that order)."""
    ds = make_dataset(db, classes=["cat", "dog", "fox"])
    s = add_samples(db, ds, [{"label": c} for c in ["cat", "cat", "cat", "cat", "cat"]])
    events = [
        (s[0], "cat", "dog", 2), (s[0], "dog", "cat", 3),  # changed, then undone: no change
        (s[1], "cat", "dog", 2), (s[1], "dog", "fox", 3),  # two steps: one change, cat -> fox
        (s[2], "dog", "cat", 4),  # one change
        (s[3], "cat", "dog", 2), (s[3], "dog", "dog", 3),  # a change, then a split move only
        (s[4], "cat", "dog", 5), (s[4], "dog", "cat", 6),  # changed and undone after version 4
    ]
    for sample, old, new, version in events:
        db.add(LabelEvent(dataset_id=ds.id, sample_id=sample.id, old_label=old, new_label=new, old_split="train",
                          new_split="valid" if old == new else "train", source="annotator", label_version=version))
    metrics = classification_metrics([0, 1, 2], [0, 1, 1], ["cat", "dog", "fox"])
    runs = []
    for v in versions:
        run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=v, history=[], info={},
                  metrics={"valid": metrics, "test": None}, finished_at=utcnow())
        db.add(run)
        db.commit()
        runs.append(run)
    ds.label_version = 6
    db.commit()
    return ds, runs


def test_labels_changed_counts_each_sample_once_by_its_net_change(db):
    ds, (r1, r2, r3) = churned_dataset(db)
    c = cmp.compare(db, r3, r1)
    assert c.labels_changed == 3, "9 events, 3 samples whose label really differs"
    assert [(m.old_label, m.new_label, m.count) for m in c.moves] == [("cat", "dog", 1), ("cat", "fox", 1), ("dog", "cat", 1)]
    assert {n: (pc.labels_in, pc.labels_out) for n, pc in c.per_class.items()} == {
        "cat": (1, 2), "dog": (1, 1), "fox": (1, 0)}
    assert cmp.compare(db, r1, r3).labels_changed == 3, "either way round"
    assert cmp.compare(db, r3, r2).labels_changed == 0, "changed and undone between versions 4 and 6"
    assert [p.labels_changed for p in cmp.run_history(db, ds.id).runs] == [None, 3, 0]


def test_labels_changed_between_runs_out_of_version_order(db):
    ds, _ = churned_dataset(db, versions=(1, 6, 4, 1, 1))
    assert [p.labels_changed for p in cmp.run_history(db, ds.id).runs] == [None, 3, 0, 3, 0]


def test_the_overview_shows_the_net_counts(client, db, annotator):
    ds, (r1, _, r3) = churned_dataset(db)
    login(client, annotator.user.username)
    html = client.get(f"/datasets/{ds.id}?run={r3.id}&base={r1.id}").text
    table = section(html, "history", "table")
    labels_row = table[table.index("Labels changed"):]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", labels_row[: labels_row.index("</tr>")])[:3] == ["–", "3", "0"]
    assert "<strong>3</strong> labels changed between label versions v1 and v6" in re.sub(r"\s+", " ", html)


# --- the advisor: one line per recommendation, the numbers in a table on demand ---------------


def advised_dataset(db):
    """The advisor tests' run (collect a, relabel b, prune c, confused pair d / e)."""
    ds = make_dataset(db, classes=ADVICE_CLASSES)
    add_samples(db, ds, [{"label": c, "split": "train"} for c, n in ADVICE_TRAIN.items() for _ in range(n)])
    make_run(db, ds, metrics_from(ADVICE_MATRIX, ADVICE_CLASSES))
    return ds


def advice_items(html: str) -> list[str]:
    block = section(html, "advice", "section")
    return re.split(r'(?=<li class="advice-item")', block)[1:]


def test_each_recommendation_is_one_line_with_its_numbers_and_details_on_demand(client, db, engineer):
    ds = advised_dataset(db)
    login(client, engineer.user.username)
    items = advice_items(client.get(f"/datasets/{ds.id}").text)
    assert len(items) == 4
    lines = {}
    for item in items:
        kind = re.search(r'data-kind="(\w+)"', item).group(1)
        line, details = item.split('<details class="advice-details">')
        assert "<table" not in line and '<p class="advice-reason">' not in line, "the line carries no wall of text"
        assert '<table class="table table-small advice-numbers">' in details and '<p class="advice-reason">' in details
        lines[kind] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", unescape(line))).strip()
    assert lines["collect"] == "Collect more a valid recall 0.50 (mean 0.85), 10 train samples (median 40)"
    assert lines["relabel"] == "Relabel b valid precision 0.77 (mean 0.87): 3 of 13 predicted b are other classes"
    assert lines["prune"].startswith("Try pruning c valid F1 0.95 (mean 0.84), 60 train samples (median 40)")
    assert lines["prune"].endswith("Run the prune experiment for c")
    assert lines["confused_pair"] == "Confused pair d / e confused 2 times on valid"

    relabel = next(i for i in items if 'data-kind="relabel"' in i)
    rows = re.findall(r'<tr><th scope="row">(\w+)</th><td class="num">(\d+)</td>', relabel)
    assert rows == [("a", "1"), ("d", "1"), ("f", "1")], "who is predicted b, one row each"
    assert "(1 labelled a, 1 labelled d, 1 labelled f)" in unescape(relabel)
    collect = next(i for i in items if 'data-kind="collect"' in i)
    numbers = re.findall(r'<th scope="row">([^<]+)</th><td class="num">([^<]+)</td><td class="num">([^<]+?) <span', collect)
    assert numbers == [("Valid recall", "0.50", "0.85"), ("Train samples", "10", "40")]


# --- the training form: plain labels, help that agrees with the README ------------------------


def test_the_training_form_speaks_plainly_and_agrees_with_the_readme_on_lr_mult(client, db, engineer):
    ds = make_dataset(db, task="image", classes=["a", "b"])
    login(client, engineer.user.username)
    form = form_of(client.get(f"/datasets/{ds.id}/train").text)
    labels = dict(re.findall(r'<label for="f-(\w+)"><span>([^<]+)</span></label>', form))
    assert labels["oof_repeats"] == "Out-of-fold passes"
    assert labels["lr_mult"] == "First layers&#39; slowdown"
    assert labels["freeze_epochs"] == "Head-only epochs"
    for jargon in ("Oof repeats", "Layer lr ratio", "Lr mult", "Freeze epochs"):
        assert jargon not in form, jargon

    # README: "freeze_epochs, lr_mult | 1, 100 | pretrained models: epochs on the new head, then the
    # whole model at lr / 2 with slice(lr / 2 / lr_mult, lr / 2)".
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `freeze_epochs`, `lr_mult` |"))
    defaults = [d.strip() for d in row.split("|")[2].split(",")]
    assert "pretrained models" in row and "whole model at lr / 2" in row and "lr / 2 / lr_mult" in row
    help_text = unescape(re.search(r'<small id="h-lr_mult" class="field-help">([^<]+)</small>', form).group(1))
    assert help_text.startswith("Pretrained models:")
    assert "whole model trains at half the learning rate" in help_text
    assert "lr / 2 / this value" in help_text and "lr / 2 for the head" in help_text
    assert f"{defaults[1]} by default" in help_text
    freeze = unescape(re.search(r'<small id="h-freeze_epochs" class="field-help">([^<]+)</small>', form).group(1))
    assert "only the new head" in freeze and f"({defaults[0]} by default)" in freeze
