"""Real Chromium on the dataset overview and the job page: the charts draw under the CSP,
a confusion cell opens the review queue on its (given, predicted) pair, and the job page's
progress bar reaches 100% when the job finishes while the page polls."""

from __future__ import annotations

import math
import random
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from app.evaluation.metrics import classification_metrics
from app.models import Dataset, Job, LabelEvent, Prediction, Run, utcnow
from tests.builders import add_samples, make_dataset
from tests.web.browser_support import SHOTS, shoot, sign_in

pytestmark = pytest.mark.browser

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The digits a model mixes up: when it is wrong, it mostly says the partner.
PARTNER = {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 3, 6: 5, 7: 1, 8: 3, 9: 4}
# Records every CSP violation the page reports, before any page script runs.
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def epochs(models: list[str], n: int, start_loss: float = 1.4) -> list[dict]:
    out = []
    for i, model in enumerate(models):
        for e in range(1, n + 1):
            loss = start_loss * math.exp(-0.35 * e) + 0.08
            out.append({"model": model, "fold": None if model == "final" else i, "epoch": e,
                        "train_loss": round(loss, 4), "valid_loss": round(loss * 1.12 + 0.03, 4),
                        "accuracy": round(min(0.99, 0.62 + 0.045 * e), 4), "frozen": False, "seconds": 3.2})
    return out


def predict(rng: random.Random, given: list[int], error: float) -> list[int]:
    out = []
    for y in given:
        if rng.random() >= error:
            out.append(y)
        else:
            out.append(PARTNER[y] if rng.random() < 0.8 else rng.choice([k for k in range(10) if k != y]))
    return out


def digits_dataset(db) -> tuple[Dataset, list[Run]]:
    """Ten digit classes, three succeeded runs that improve as labels are fixed between them,
    and the last run's predictions for the valid split."""
    rng = random.Random(7)
    ds = make_dataset(db, task="image", classes=CLASSES, name="digits")
    sizes = {"train": [96, 104, 99, 101, 98, 92, 100, 103, 97, 110], "valid": [30] * 10, "test": [20] * 10}
    rows = [{"label": CLASSES[k], "split": split} for split, per in sizes.items() for k, n in enumerate(per) for _ in range(n)]
    rows += [{"label": None} for _ in range(300)]
    samples = add_samples(db, ds, rows)
    train = [s for s in samples if s.split == "train"]
    valid = [s for s in samples if s.split == "valid"]
    test = [s for s in samples if s.split == "test"]
    valid_y = [CLASSES.index(s.label) for s in valid]
    test_y = [CLASSES.index(s.label) for s in test]

    version, runs, valid_pred = 0, [], []
    for error, fixes in ((0.2, 0), (0.12, 60), (0.07, 35)):
        for s in rng.sample(train, fixes):
            version += 1
            new = CLASSES[PARTNER[CLASSES.index(s.label)]]
            db.add(LabelEvent(dataset_id=ds.id, sample_id=s.id, old_label=new, new_label=s.label, old_split="train",
                              new_split="train", source="annotator", label_version=version))
        valid_pred = predict(rng, valid_y, error)
        metrics = {"valid": classification_metrics(valid_y, valid_pred, CLASSES),
                   "test": classification_metrics(test_y, predict(rng, test_y, error), CLASSES)}
        run = Run(dataset_id=ds.id, status="succeeded", params={"arch": "resnet18", "epochs": 8},
                  label_version=max(version, 1), metrics=metrics,
                  history=epochs([f"fold {f}" for f in range(1, 6)] + ["final"], 8), info={}, finished_at=utcnow())
        db.add(run)
        db.commit()
        runs.append(run)
    last = runs[-1]
    for s, y, p in zip(valid, valid_y, valid_pred):
        probs = {CLASSES[p]: 0.82, CLASSES[y]: 0.12} if p != y else {CLASSES[y]: 0.9, CLASSES[PARTNER[y]]: 0.06}
        second = max((c for c in probs if c != CLASSES[p]), key=probs.get)
        db.add(Prediction(
            run_id=last.id, sample_id=s.id, given_label=s.label, label=CLASSES[p], probs=probs,
            loss=-math.log(probs[s.label]), self_confidence=probs[s.label],
            normalized_margin=probs[s.label] - max(v for c, v in probs.items() if c != s.label),
            confusion_margin=probs[CLASSES[p]] - probs[second], confusion_a=CLASSES[p], confusion_b=second,
            entropy=-sum(v * math.log(v) for v in probs.values()), aum=None, out_of_fold=False, fold=None))
    ds.label_version = version + 4
    db.commit()
    return ds, runs


def test_overview_charts_confusion_links_and_a_job_reaching_100_percent(live_server, browser, db, engineer, backend):
    ds, runs = digits_dataset(db)
    SHOTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.add_init_script(CSP_PROBE)
    sign_in(page, live_server, engineer)

    # --- the overview: three charts drawn, no console errors, no CSP violations -------------------
    page.goto(f"{live_server}/datasets/{ds.id}")
    page.wait_for_function("() => document.querySelectorAll('canvas[data-drawn=true]').length === 3")
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('canvas[data-chart]')).map(c => {
        const chart = Chart.getChart(c);
        return [c.dataset.chart, !!chart, c.width > 0 && c.height > 0, chart ? chart.data.datasets.length : 0];
    })""")
    assert drawn == [["distribution", True, True, 3], ["per_class", True, True, 2], ["history", True, True, 10]]
    assert page.evaluate("window.__csp") == []
    assert page.locator("#confusion td.cell").count() == 100
    shoot(page, path=str(SHOTS / f"overview-{backend}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)  # the charts resize to the narrower boxes
    shoot(page, path=str(SHOTS / f"overview-narrow-{backend}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    # The compare form swaps in another pair of runs without a page load.
    page.evaluate("window.__same_page = true")
    page.select_option("#compare-panel select[name=base]", str(runs[0].id))
    page.wait_for_selector(f"#compare-heading:has-text('against run #{runs[0].id}')")
    assert page.evaluate("window.__same_page") is True
    assert not problems, problems
    assert page.evaluate("window.__csp") == []

    # --- a confusion cell opens the review queue on that pair --------------------------------------
    matrix = runs[-1].metrics["valid"]["confusion"]["matrix"]
    given, predicted = max(((i, j) for i in range(10) for j in range(10) if i != j), key=lambda ij: matrix[ij[0]][ij[1]])
    row = page.locator("#confusion tbody tr").nth(given)
    cell = row.locator("td.cell").nth(predicted)
    assert cell.inner_text().strip() == str(matrix[given][predicted])
    cell.locator("a").click()
    page.wait_for_url(f"{live_server}/datasets/{ds.id}/review?*")
    url = urlsplit(page.url)
    assert url.path == f"/datasets/{ds.id}/review"
    assert parse_qs(url.query) == {"split": ["valid"], "label": [CLASSES[given]], "predicted": [CLASSES[predicted]]}

    # --- the training form: an inline error, then a queued job --------------------------------------
    problems.clear()
    page.goto(f"{live_server}/datasets/{ds.id}/train")
    assert page.locator("#f-arch").input_value() == "resnet18"
    shoot(page, path=str(SHOTS / f"train-{backend}.png"), full_page=True)
    page.click("details.more-options > summary")
    page.fill("#f-epochs", "0")
    page.fill("#f-seed", "-3")
    page.click("#train-form button[type=submit]")
    page.wait_for_selector("#e-epochs")
    assert "greater than or equal to 1" in page.inner_text("#e-epochs")
    assert "greater than or equal to 0" in page.inner_text("#e-seed")
    shoot(page, path=str(SHOTS / f"train-errors-{backend}.png"), full_page=True)
    # The browser logs the 422 itself; nothing else may have been logged.
    assert all("422" in p for p in problems), problems
    problems.clear()
    page.fill("#f-epochs", "2")
    page.fill("#f-seed", "3")
    page.click("#train-form button[type=submit]")
    page.wait_for_url(re.compile(rf"{re.escape(live_server)}/jobs/\d+$"))
    queued = db.get(Job, int(page.url.rsplit("/", 1)[1]))
    assert (queued.kind, queued.status, queued.params["epochs"], queued.params["seed"]) == ("train", "queued", 2, 3)
    assert page.locator("#job-live .pill").inner_text() == "queued"

    # --- a running job: its curves draw, then it finishes while the page polls ---------------------
    run = Run(dataset_id=ds.id, status="running", params={}, label_version=ds.label_version,
              history=epochs(["fold 1", "fold 2"], 8)[:11], info={})
    db.add(run)
    db.commit()
    job = Job(dataset_id=ds.id, kind="train", params={"epochs": 8}, status="running", progress=0.31,
              message="fold 2/5: epoch 3/8", attempts=1, max_attempts=3, cancel_requested=False, run_id=run.id,
              created_by=engineer.user.id, started_at=utcnow())
    db.add(job)
    db.commit()
    page.goto(f"{live_server}/jobs/{job.id}")
    page.wait_for_selector("#loss-chart[data-drawn=true]")
    assert page.locator("#job-progress").get_attribute("value") == "31"
    assert page.evaluate("Chart.getChart(document.getElementById('loss-chart')).data.labels.length") == 11
    shoot(page, path=str(SHOTS / f"job-running-{backend}.png"), full_page=True)

    # More epochs arrive, then the job succeeds (its last progress report said 96%).
    run.history = epochs([f"fold {f}" for f in range(1, 6)] + ["final"], 8)
    run.status, run.finished_at = "succeeded", utcnow()
    db.commit()
    job.status, job.progress, job.message, job.finished_at = "succeeded", 0.96, "done", utcnow()
    db.commit()
    page.wait_for_selector("#job-progress[value='100']", timeout=10_000)
    assert page.locator("#job-percent").inner_text() == "100%"
    page.wait_for_function("() => Chart.getChart(document.getElementById('loss-chart')).data.labels.length === 48")
    assert page.locator("#job-live").get_attribute("hx-trigger") is None, "the status block stops polling"
    page.wait_for_function("() => !document.getElementById('job-detail').hasAttribute('hx-trigger')")
    assert page.locator("#epochs tbody tr").count() == 48
    shoot(page, path=str(SHOTS / f"job-done-{backend}.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    shoot(page, path=str(SHOTS / f"job-done-narrow-{backend}.png"))
    page.set_viewport_size({"width": 1280, "height": 900})

    page.goto(f"{live_server}/datasets/{ds.id}/jobs")
    assert page.locator(f"a[href='/jobs/{job.id}']").count() == 1
    shoot(page, path=str(SHOTS / f"jobs-{backend}.png"), full_page=True)
    assert not problems, problems
    assert page.evaluate("window.__csp") == []
