"""Real Chromium through the whole loop, the way people use it: an annotator opens a dataset,
drills down from a confusion cell into the review queue, fixes labels with the keyboard and
in the grid, and cannot train; an engineer trains on the fixed labels with a real worker
process and watches the job reach 100%. Also: the review page on a phone-sized screen."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sqlalchemy import func, select

from app.datasets.storage import BlobStore
from app.evaluation.metrics import classification_metrics
from app.models import Dataset, Job, Prediction, Run, Sample
from tests.builders import add_samples, make_dataset
from tests.conftest import TEST_SECRET
from tests.web.browser_support import SHOTS, sign_in
from tests.web.review_builders import confident, events_of, make_run

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
DIGITS = [str(d) for d in range(10)]
# Torch's import and one tiny epoch on a loaded two-core machine: slow, never stuck.
TRAIN_SECONDS = 300
# The smallest recipe the form takes: one epoch at 16 px, no lr_find, scored in sample.
TINY_RECIPE = {"epochs": "1", "lr": "0.01", "batch_size": "8", "image_size": "16", "freeze_epochs": "0"}
HOSTILE_SCRIPT = "<script>window.__pwned = 1; alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=\"window.__pwned = 2; alert(2)\">"


@pytest.fixture
def worker(database_url, settings, tmp_path):
    """A `python -m app.cli worker` process on the test database and data directory."""
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "CURATE_DATABASE_URL": database_url,
        "CURATE_DATA_DIR": str(settings.data_dir),
        "CURATE_SECRET_KEY": TEST_SECRET,
        "CURATE_JOB_LEASE_SECONDS": "60",
        "CURATE_WORKER_POLL_SECONDS": "0.2",
        "CURATE_TORCH_THREADS": os.environ.get("CURATE_TORCH_THREADS", "1"),
        "PYTHONPATH": str(ROOT),
    }
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--id", "flow"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    proc.log = log_path
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((255 - pixels * 15).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def digits(db, settings):
    """Handwritten 8x8 digits as PNGs, like the demo but small, with a finished run.

    Train: six samples given 1 that the model calls 7 (five are 7s, one really is a 1), and
    one clean sample of each digit. Valid: two of each digit; the run mistook two 1s for 7s,
    so the confusion matrix has a (1, 7) cell to drill down from. Test: one of each digit.
    """
    data = load_digits()
    store = BlobStore(settings.blob_dir)
    ds = make_dataset(db, task="image", classes=DIGITS, name="handwritten digits")
    used: dict[int, int] = {}

    def image(digit: int) -> str:
        nth = used.get(digit, 0)
        used[digit] = nth + 1
        return store.put(_png(data.images[np.flatnonzero(data.target == digit)[nth]]))

    # (true digit, given label, split, model's class, model's confidence)
    plan = [(7, "1", "train", "7", p) for p in (0.95, 0.92, 0.90, 0.85, 0.80)] + [(1, "1", "train", "7", 0.60)]
    plan += [(d, str(d), "train", str(d), 0.97) for d in range(10)]
    plan += [(d, str(d), "valid", "7" if d == 1 else str(d), 0.9) for d in range(10) for _ in range(2)]
    plan += [(d, str(d), "test", str(d), 0.9) for d in range(10)]
    rows = [{"label": given, "split": split, "image_blob": image(true), "external_id": f"digit-{i}"}
            for i, (true, given, split, _, _) in enumerate(plan)]
    samples = add_samples(db, ds, rows)
    run = make_run(db, ds, {s.id: confident(model, DIGITS, p) for s, (_, _, _, model, p) in zip(samples, plan)})

    def metrics(split: str) -> dict:
        picked = [(DIGITS.index(given), DIGITS.index(model)) for _, given, sp, model, _ in plan if sp == split]
        return classification_metrics([g for g, _ in picked], [m for _, m in picked], DIGITS)

    run.metrics = {"valid": metrics("valid"), "test": metrics("test")}
    run.history = [{"model": "final", "fold": None, "epoch": 1, "train_loss": 0.9, "valid_loss": 0.8,
                    "accuracy": 0.9, "frozen": False, "seconds": 2.0}]
    run.info = {}
    db.commit()
    return ds, samples, run


@pytest.fixture
def hostile(db):
    ds = make_dataset(db, task="text", classes=["ok", "spam"], name="<b>hostile</b> texts")
    samples = add_samples(db, ds, [{"label": "ok", "text": HOSTILE_SCRIPT}, {"label": "ok", "text": HOSTILE_IMG}])
    make_run(db, ds, {samples[0].id: confident("spam", ds.classes, 0.9), samples[1].id: confident("spam", ds.classes, 0.8)})
    return ds, samples


class Shots:
    """A screenshot of every page visited, named in visiting order."""

    def __init__(self, backend: str, prefix: str) -> None:
        SHOTS.mkdir(exist_ok=True)
        self.backend, self.prefix, self.n = backend, prefix, 0

    def __call__(self, page, name: str, full_page: bool = True) -> None:
        self.n += 1
        # caret="initial": hiding the caret writes style="" on inputs, which the CSP refuses once htmx copies it.
        page.screenshot(path=str(SHOTS / f"{self.prefix}-{self.n:02d}-{name}-{self.backend}.png"),
                        full_page=full_page, caret="initial")


def watch(page, problems: list[str], dialogs: list[str]) -> None:
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)


def test_annotator_fixes_labels_from_the_confusion_matrix_and_an_engineer_retrains(
    live_server, browser, db, annotator, engineer, digits, hostile, worker, backend
):
    ds, ss, first_run = digits
    pair = ss[:6]  # given 1, predicted 7, most suspicious first
    shot = Shots(backend, "flow")
    problems: list[str] = []
    dialogs: list[str] = []

    # --- the annotator: log in, open the dataset --------------------------------------------------
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    page = ctx.new_page()
    watch(page, problems, dialogs)
    page.goto(live_server + "/login")
    shot(page, "login")
    sign_in(page, live_server, annotator)
    shot(page, "datasets")
    # A hostile dataset name is text in the list, not markup.
    assert page.locator("a", has_text="<b>hostile</b> texts").count() == 1
    page.click(f"a[href='/datasets/{ds.id}']")
    page.wait_for_url(f"{live_server}/datasets/{ds.id}")
    page.wait_for_selector("#confusion")
    shot(page, "overview")
    # No training controls for an annotator.
    assert page.locator("a[href$='/train'], form[action$='/train']").count() == 0
    controls = re.compile(r"^(train|train a model|train again|start training|retrain)$", re.I)
    assert page.get_by_role("link", name=controls).count() == 0
    assert page.get_by_role("button", name=controls).count() == 0

    # --- drill down from the off-diagonal (1, 7) cell -----------------------------------------------
    cell = page.locator("#confusion tbody tr").nth(1).locator("td.cell").nth(7)
    assert cell.inner_text().strip() == "2"
    cell.locator("a").click()
    page.wait_for_url(re.compile(rf"{re.escape(live_server)}/datasets/{ds.id}/review\?.*split=valid.*"))
    # The matrix is the valid split's: its cell opens the two valid 1s the run called 7.
    assert "valid · given 1 · predicted 7" in page.locator(".status-line").inner_text()
    valid_ones = {str(s.id) for s in ss if s.split == "valid" and s.label == "1"}
    assert page.locator("#review-panel [data-sample]").get_attribute("data-sample") in valid_ones

    def showing(sample: Sample) -> None:
        page.wait_for_selector(f'#review-panel [data-sample="{sample.id}"]')

    # The same pair on the train split, where the wrong labels the model learnt from are.
    page.select_option(".filters select[name=split]", "train")
    page.wait_for_url(re.compile(rf"{re.escape(live_server)}/datasets/{ds.id}/review\?.*split=train.*"))
    assert "train · given 1 · predicted 7" in page.locator(".status-line").inner_text()
    showing(pair[0])
    shot(page, "review", full_page=False)
    page.evaluate("window.__same_page = true")
    stage = page.locator(".stage-image").bounding_box()
    for other in (".side", ".filters", ".status-line", ".review-head"):
        box = page.locator(other).bounding_box()
        assert stage["width"] * stage["height"] > box["width"] * box["height"], f"{other} is larger than the sample"

    # --- three relabels with the keyboard, the last one undone --------------------------------------
    page.keyboard.press("7")
    showing(pair[1])
    page.keyboard.press("7")
    showing(pair[2])
    page.keyboard.press("2")  # a slip: this one is a 7 too
    showing(pair[3])
    page.keyboard.press("u")
    showing(pair[2])
    page.wait_for_selector("text=Undone: sample")
    assert page.locator(".given").inner_text() == "1"
    assert page.evaluate("window.__same_page") is True, "key presses swap the panel, never reload the page"
    shot(page, "review-undone", full_page=False)

    # --- grid mode on the same filters: accept the predictions of a selection -----------------------
    page.click("nav.modes a:has-text('Grid')")
    page.wait_for_url(re.compile(rf"{re.escape(live_server)}/datasets/{ds.id}/review/grid\?.*"))
    tiles = page.locator(".tile")
    assert tiles.count() == 4, "the undone sample is back in the queue, beside the three not yet seen"
    picked_ids = tiles.locator(".tile-check").evaluate_all("els => els.map(e => Number(e.value.split(':')[0]))")
    assert picked_ids == [pair[2].id, pair[3].id, pair[4].id, pair[5].id]
    tiles.nth(0).click()
    tiles.nth(2).click(modifiers=["Shift"])
    assert page.locator(".selection-count").inner_text() == "3 selected"
    shot(page, "grid")
    page.click("button[value=accept]")
    page.wait_for_selector("text=3 changed")
    assert page.locator(".tile").count() == 1, "only the real 1 is left"
    shot(page, "grid-accepted")

    me = annotator.user.id
    assert events_of(db, ds) == [
        (pair[0].id, "1", "7", "annotator", me, None),
        (pair[1].id, "1", "7", "annotator", me, None),
        (pair[2].id, "1", "2", "annotator", me, None),
        (pair[2].id, "2", "1", "annotator", me, "undo"),
        (pair[2].id, "1", "7", "annotator", me, None),
        (pair[3].id, "1", "7", "annotator", me, None),
        (pair[4].id, "1", "7", "annotator", me, None),
    ]
    db.expire_all()
    assert db.get(Dataset, ds.id).label_version == 7

    # --- the annotator cannot train ----------------------------------------------------------------
    problems.clear()  # the browser logs the 403 below itself
    response = page.goto(f"{live_server}/datasets/{ds.id}/train")
    assert response.status == 403
    assert "Not allowed" in page.locator("h1").inner_text()
    assert page.locator("#train-form").count() == 0
    shot(page, "train-forbidden")
    problems[:] = [p for p in problems if "403" not in p]

    # --- hostile sample text shows as text and runs nothing ----------------------------------------
    hds, hss = hostile
    page.goto(f"{live_server}/datasets/{hds.id}/review")
    assert page.locator(".stage-text").inner_text() == HOSTILE_SCRIPT
    shot(page, "review-hostile", full_page=False)
    page.keyboard.press("2")  # spam
    page.wait_for_selector(f'#review-panel [data-sample="{hss[1].id}"]')
    assert page.locator(".stage-text").inner_text() == HOSTILE_IMG
    assert page.locator(".stage img").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    ctx.close()

    # --- the engineer trains on the fixed labels with a real worker ---------------------------------
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    page = ctx.new_page()
    watch(page, problems, dialogs)
    sign_in(page, live_server, engineer)
    page.goto(f"{live_server}/datasets/{ds.id}")
    page.click(f"a[href='/datasets/{ds.id}/train']")
    page.wait_for_url(f"{live_server}/datasets/{ds.id}/train")
    page.select_option("#f-scoring", "in_sample")
    for name, value in TINY_RECIPE.items():
        page.fill(f"#f-{name}", value)
    for name in ("pretrained", "augment"):
        page.uncheck(f"#f-{name}")
    shot(page, "train")
    page.click("#train-form button[type=submit]")
    page.wait_for_url(re.compile(rf"{re.escape(live_server)}/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    job = db.get(Job, job_id)
    assert (job.kind, job.params["epochs"], job.params["scoring"], job.params["lr"], job.params["image_size"]) == (
        "train", 1, "in_sample", 0.01, 16)
    shot(page, "job-queued")

    # Watch the progress bar as the page polls, until it reads 100%.
    seen: list[int] = []
    deadline = time.monotonic() + TRAIN_SECONDS
    running_shot = False
    while True:
        value = int(page.locator("#job-progress").get_attribute("value"))
        if not seen or seen[-1] != value:
            seen.append(value)
        if 0 < value < 100 and not running_shot:
            shot(page, "job-running")
            running_shot = True
        if value == 100:
            break
        db.expire_all()
        status = db.get(Job, job_id).status
        assert status in ("queued", "running", "succeeded"), f"job {status}: {db.get(Job, job_id).error}\n" \
            + worker.log.read_text(errors="replace")[-3000:]
        assert worker.poll() is None, "the worker exited:\n" + worker.log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no 100% after {TRAIN_SECONDS}s; seen {seen}\n" \
            + worker.log.read_text(errors="replace")[-3000:]
        page.wait_for_timeout(250)
    assert seen == sorted(seen), f"the progress bar went backwards: {seen}"
    assert page.locator("#job-percent").inner_text() == "100%"
    page.wait_for_function("() => !document.getElementById('job-live').hasAttribute('hx-trigger')")
    shot(page, "job-done")

    db.expire_all()
    job = db.get(Job, job_id)
    assert (job.status, job.worker_id) == ("succeeded", "flow")
    run = db.get(Run, job.run_id)
    assert run.status == "succeeded" and run.id != first_run.id
    assert run.label_version == 7, "the run trained on the annotator's labels"
    scored = db.scalar(select(func.count()).select_from(Prediction).where(Prediction.run_id == run.id))
    assert scored == len(ss)

    # The overview now shows the new run.
    page.goto(f"{live_server}/datasets/{ds.id}")
    page.wait_for_selector("#confusion")
    assert f"#{run.id}" in page.locator("main").inner_text()
    shot(page, "overview-retrained")
    ctx.close()

    assert dialogs == [], dialogs
    assert not problems, problems


def test_review_page_on_a_phone(live_server, browser, annotator, digits, backend):
    ds, ss, _ = digits
    shot = Shots(backend, "phone")
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                              has_touch=True)
    page = ctx.new_page()
    sign_in(page, live_server, annotator)
    page.goto(f"{live_server}/datasets/{ds.id}/review?label=1&predicted=7")
    page.wait_for_selector(f'#review-panel [data-sample="{ss[0].id}"]')
    page.wait_for_function("() => document.querySelector('.stage-image').complete")
    shot(page, "review")
    shot(page, "review-screen", full_page=False)

    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    # Nothing sticks out past the right edge, unless an ancestor on screen clips it.
    wide = page.evaluate("""w => Array.from(document.querySelectorAll('body *'))
        .filter(e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.right > w + 0.5; })
        .filter(e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
            if (getComputedStyle(a).overflowX !== 'visible' && a.getBoundingClientRect().right <= w + 0.5) return false;
          } return true; })
        .map(e => e.tagName.toLowerCase() + '.' + e.className)""", width)
    assert wide == [], wide

    status = page.locator(".status-line p").first
    assert status.evaluate("p => p.scrollWidth <= p.clientWidth"), "the status line is cut off"
    assert "ranked by loss" in status.inner_text()

    stage = page.locator(".stage-image").bounding_box()
    assert stage["width"] >= 0.75 * width, stage
    # Stacked under the sample, the side column is taller than it in all; each of its blocks is smaller.
    blocks = page.locator(".side > *, .filters, .status-line, .review-head")
    assert blocks.count() >= 6
    for i in range(blocks.count()):
        box = blocks.nth(i).bounding_box()
        name = blocks.nth(i).evaluate("e => e.tagName.toLowerCase() + '.' + e.className")
        assert stage["width"] * stage["height"] > box["width"] * box["height"], f"{name} is larger than the sample"

    # Ten class buttons wrap onto several rows, each fully on screen and big enough to tap.
    buttons = page.locator(".class-button")
    assert buttons.count() == 10
    boxes = [buttons.nth(i).bounding_box() for i in range(10)]
    assert len({round(b["y"]) for b in boxes}) >= 2, "the class buttons do not wrap"
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= width for b in boxes), boxes
    assert all(b["height"] >= 32 for b in boxes), boxes

    # Tapping a class works on a touch screen.
    page.locator(".class-button", has_text="7").first.tap()
    page.wait_for_selector(f'#review-panel [data-sample="{ss[1].id}"]')
    ctx.close()
