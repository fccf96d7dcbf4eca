"""Real Chromium: an annotator relabels with the keyboard, undoes, accepts predictions in the
grid, and the database holds exactly those label events; hostile sample text runs nothing."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from app.datasets.storage import BlobStore
from app.models import Sample
from tests.builders import add_samples, make_dataset, make_user
from tests.web.browser_support import SHOTS
from tests.web.review_builders import confident, events_of, make_run

pytestmark = pytest.mark.browser

DIGITS = [str(d) for d in range(10)]


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((255 - pixels * 15).astype(np.uint8), mode="L").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def digits(db, settings):
    """Twelve handwritten 8x8 digits with a finished run. Three carry wrong labels (the most
    suspicious), and four are given 1 where the model says 7, to fix in the grid."""
    data = load_digits()
    store = BlobStore(settings.blob_dir)
    ds = make_dataset(db, task="image", classes=DIGITS, name="digits")

    def pick(digit: int, nth: int) -> np.ndarray:
        return data.images[np.flatnonzero(data.target == digit)[nth]]

    # (true digit, given label, model's class, model's confidence)
    plan = [
        (8, "3", "8", 0.97),   # wrong: fixed with the 8 key
        (4, "9", "4", 0.95),   # wrong: fixed by accepting the prediction (P)
        (5, "6", "5", 0.93),   # wrong: fixed with the 5 key, then undone
        (7, "1", "7", 0.80),   # the pair 1 -> 7, for the grid
        (7, "1", "7", 0.78),
        (1, "1", "7", 0.60),
        (7, "1", "7", 0.76),
        (2, "2", "2", 0.99),
        (0, "0", "0", 0.99),
        (6, "6", "6", 0.98),
        (3, "3", "3", 0.98),
        (9, "9", "9", 0.97),
    ]
    rows = [{"label": given, "image_blob": store.put(_png(pick(true, i))), "external_id": f"digit-{i}"}
            for i, (true, given, _, _) in enumerate(plan)]
    samples = add_samples(db, ds, rows)
    make_run(db, ds, {s.id: confident(model, DIGITS, p) for s, (_, _, model, p) in zip(samples, plan)})
    return ds, samples


@pytest.fixture
def hostile(db):
    ds = make_dataset(db, task="text", classes=["ok", "spam"], name="hostile")
    samples = add_samples(db, ds, [
        {"label": "ok", "text": "<script>alert(1)</script>"},
        {"label": "ok", "text": "<img src=x onerror=alert(1)>"},
    ])
    make_run(db, ds, {samples[0].id: confident("spam", ds.classes, 0.9), samples[1].id: confident("spam", ds.classes, 0.8)})
    return ds, samples


def test_keyboard_review_undo_grid_and_hostile_text(live_server, browser, db, annotator, digits, hostile, backend):
    ds, ss = digits
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    dialogs: list[str] = []
    # Chromium logs every 4xx response; the conflict's 409 is the page working as designed.
    expected = "the server responded with a status of 409"
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and expected not in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def on_dialog(dialog):
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    SHOTS.mkdir(exist_ok=True)

    page.goto(f"{live_server}/datasets/{ds.id}/review")
    page.fill("input[name=username]", annotator.user.username)
    page.fill("input[name=password]", annotator.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/datasets/{ds.id}/review")

    def showing(sample: Sample) -> None:
        page.wait_for_selector(f'#review-panel [data-sample="{sample.id}"]')

    # The most suspicious first: the 8 given as 3.
    showing(ss[0])
    page.evaluate("window.__same_page = true")
    page.screenshot(path=str(SHOTS / f"review-queue-{backend}.png"))
    image = page.locator(".stage-image")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 8
    assert image.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
    box = image.bounding_box()
    assert box["height"] >= 400, box
    # The sample is the largest thing on the page.
    for other in (".side", ".filters", ".status-line", ".review-head"):
        o = page.locator(other).bounding_box()
        assert box["width"] * box["height"] > o["width"] * o["height"], other

    page.keyboard.press("8")
    showing(ss[1])
    assert page.locator(".given").inner_text() == "9"
    page.keyboard.press("p")
    showing(ss[2])
    page.keyboard.press("5")
    showing(ss[3])
    # The count loads once the panel shows, off the path of the next sample.
    page.locator(".review-progress", has_text="3 of 12 reviewed").wait_for(timeout=5_000)
    page.keyboard.press("u")
    showing(ss[2])
    page.wait_for_selector("text=Undone: sample")
    assert page.locator(".given").inner_text() == "6"
    assert page.evaluate("window.__same_page") is True, "actions swap the panel, never reload the page"
    page.screenshot(path=str(SHOTS / f"review-queue-undone-{backend}.png"))

    # Grid mode for the pair given 1, predicted 7: select the first three, accept the predictions.
    page.goto(f"{live_server}/datasets/{ds.id}/review/grid?label=1&predicted=7")
    tiles = page.locator(".tile")
    assert tiles.count() == 4
    tiles.nth(0).click()
    # A swap elsewhere on the page between the two clicks (the lazily loaded progress count, on
    # a slow server) must not drop the range's anchor.
    page.evaluate("document.body.dispatchEvent(new CustomEvent('htmx:afterSwap', {bubbles: true}))")
    tiles.nth(2).click(modifiers=["Shift"])
    assert page.locator(".selection-count").inner_text() == "3 selected"
    picked = page.locator(".tile-check:checked").evaluate_all("els => els.map(e => Number(e.value.split(':')[0]))")
    assert picked == [ss[3].id, ss[4].id, ss[6].id], "ranked by loss: the 0.60 one comes last"
    page.screenshot(path=str(SHOTS / f"review-grid-{backend}.png"), full_page=True)
    page.click("button[value=accept]")
    page.wait_for_selector("text=3 changed")
    assert page.locator(".tile").count() == 1
    page.screenshot(path=str(SHOTS / f"review-grid-accepted-{backend}.png"), full_page=True)

    me = annotator.user.id
    assert events_of(db, ds) == [
        (ss[0].id, "3", "8", "annotator", me, None),
        (ss[1].id, "9", "4", "annotator", me, None),
        (ss[2].id, "6", "5", "annotator", me, None),
        (ss[2].id, "5", "6", "annotator", me, "undo"),
        (ss[3].id, "1", "7", "annotator", me, None),
        (ss[4].id, "1", "7", "annotator", me, None),
        (ss[6].id, "1", "7", "annotator", me, None),
    ]

    # Someone else relabels the sample on screen; the next key press shows their change.
    page.goto(f"{live_server}/datasets/{ds.id}/review")
    showing(ss[2])
    other = make_user(db, "annotator")
    r = httpx.patch(f"{live_server}/api/v1/samples/{ss[2].id}", json={"label": "3"},
                    headers={**other.headers, "If-Match": "3"})
    assert r.status_code == 200, r.text
    page.keyboard.press("5")
    page.wait_for_selector(".conflict")
    assert f"{other.user.username} set it from 6 to 3" in page.locator(".conflict").inner_text()
    assert page.locator("#flash").is_hidden(), "a conflict is not an error"
    page.screenshot(path=str(SHOTS / f"review-conflict-{backend}.png"))
    page.click("text=Keep mine: 5")
    page.wait_for_selector(f'#review-panel [data-sample]:not([data-sample="{ss[2].id}"])')
    assert events_of(db, ds)[7:] == [
        (ss[2].id, "6", "3", "api", other.user.id, None),
        (ss[2].id, "3", "5", "annotator", me, None),
    ]

    page.goto(f"{live_server}/datasets/{ds.id}/history")
    assert page.locator(".history-table tbody tr").count() == 9
    page.screenshot(path=str(SHOTS / f"history-dataset-{backend}.png"), full_page=True)
    page.goto(f"{live_server}/samples/{ss[2].id}/history")
    page.screenshot(path=str(SHOTS / f"history-sample-{backend}.png"), full_page=True)

    # Hostile text shows as text, in the queue, the grid and the history; nothing runs.
    hds, hss = hostile
    page.goto(f"{live_server}/datasets/{hds.id}/review")
    assert page.locator(".stage-text").inner_text() == "<script>alert(1)</script>"
    page.screenshot(path=str(SHOTS / f"review-text-{backend}.png"))
    page.keyboard.press("2")  # "spam": the class keys follow the dataset's classes
    page.wait_for_selector(f'#review-panel [data-sample="{hss[1].id}"]')
    assert page.locator(".stage-text").inner_text() == "<img src=x onerror=alert(1)>"
    assert page.locator(".stage-text img").count() == 0
    page.goto(f"{live_server}/datasets/{hds.id}/review/grid")
    assert page.locator(".tile-text").inner_text() == "<img src=x onerror=alert(1)>"
    page.goto(f"{live_server}/samples/{hss[0].id}/history")
    assert page.locator(".history-text").inner_text() == "<script>alert(1)</script>"
    page.wait_for_timeout(300)
    assert dialogs == [], dialogs
    assert not problems, problems
