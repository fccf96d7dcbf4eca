"""Real Chromium on what a new user tripped on: the confusion matrix's split switch and its
links, the advisor's lines, the job log following its newest line across polls, the search
trials at 1366 px, the review queue and the overview on a phone, and the charts' legends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from app.models import Job, JobLog, Run, utcnow
from tests.builders import add_samples, make_dataset, make_user
from tests.web.browser_support import SHOTS, shoot, sign_in
from tests.web.test_browser_pages import CLASSES, CSP_PROBE, digits_dataset, epochs

pytestmark = pytest.mark.browser


def watch(page) -> list[str]:
    """Console errors, page errors and CSP violations of the page, as they happen."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.add_init_script(CSP_PROBE)
    return problems


# --- the confusion matrix -----------------------------------------------------------------


def test_the_matrix_switches_to_test_and_its_cells_open_the_queue_on_that_split(live_server, browser, db, backend):
    ds, runs = digits_dataset(db)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/datasets/{ds.id}")
    metrics = runs[-1].metrics

    def worst(split: str) -> tuple[int, int]:
        matrix = metrics[split]["confusion"]["matrix"]
        return max(((i, j) for i in range(10) for j in range(10) if i != j), key=lambda ij: (matrix[ij[0]][ij[1]], ij))

    def open_cell(split: str) -> dict:
        given, predicted = worst(split)
        cell = page.locator("#confusion tbody tr").nth(given).locator("td.cell").nth(predicted)
        assert cell.inner_text().strip() == str(metrics[split]["confusion"]["matrix"][given][predicted])
        cell.locator("a").click()
        page.wait_for_url(f"{live_server}/datasets/{ds.id}/review?*")
        query = parse_qs(urlsplit(page.url).query)
        assert query == {"split": [split], "label": [CLASSES[given]], "predicted": [CLASSES[predicted]]}
        # The queue shows that split's filter (the status line names the split first).
        assert page.locator(".status-line p.muted").first.inner_text().startswith(split)
        return query

    assert page.locator("#confusion-panel").get_attribute("data-split") == "valid"
    assert page.locator(".split-switch a[aria-current=true]").inner_text() == "Valid"
    open_cell("valid")

    page.goto(f"{live_server}/datasets/{ds.id}")
    page.evaluate("window.__same_page = true")
    page.click(".split-switch a[data-split=test]")
    page.wait_for_selector("#confusion-panel[data-split=test]")
    assert page.evaluate("window.__same_page") is True, "the switch swaps the panel in, no page load"
    assert "test, rows" in page.inner_text("#confusion-heading")
    assert page.locator(".split-switch a[aria-current=true]").inner_text() == "Test"
    totals = [int(t) for t in page.locator("#confusion tbody td.total").all_inner_texts()]
    assert totals == [sum(row) for row in metrics["test"]["confusion"]["matrix"]] == [20] * 10
    first_pair = page.locator("#confused-pairs a").first.get_attribute("href")
    assert "split=test" in first_pair
    shoot(page, str(SHOTS / f"ui-matrix-test-{backend}.png"))
    open_cell("test")
    assert not problems, problems
    assert page.evaluate("window.__csp") == []


# --- the job log ----------------------------------------------------------------------------


def last_line_visible(page) -> bool:
    """Whether the log box's last line lies inside the box's visible area."""
    return page.evaluate("""() => {
        const box = document.getElementById('job-log');
        const lines = box.querySelectorAll('.log-lines > div');
        const last = lines[lines.length - 1].getBoundingClientRect();
        const view = box.getBoundingClientRect();
        return last.bottom <= view.bottom + 1 && last.top >= view.top - 1;
    }""")


def test_the_job_log_shows_its_newest_line_across_polls_unless_the_reader_scrolls_up(live_server, browser, db, backend):
    ds = make_dataset(db, task="tabular")
    job = Job(dataset_id=ds.id, kind="train", params={"epochs": 2}, status="running", progress=0.5, attempts=1,
              max_attempts=3, cancel_requested=False, started_at=utcnow())
    db.add(job)
    db.commit()
    start = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    db.add_all([JobLog(job_id=job.id, level="info", message=f"line {i}: fold {i % 5 + 1}, epoch {i}",
                       created_at=start + timedelta(seconds=i)) for i in range(40)])
    db.commit()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/jobs/{job.id}")
    page.wait_for_selector("#job-log")
    assert page.evaluate("(() => { const l = document.getElementById('job-log'); return l.scrollHeight > l.clientHeight + 100; })()")
    assert page.locator("#job-log .log-lines > div").last.inner_text().endswith("line 39: fold 5, epoch 39")
    assert last_line_visible(page), "the page opens at the newest line"

    # A new line arrives; the poll swaps a new log box in, and it shows the new last line.
    db.add(JobLog(job_id=job.id, level="info", message="line 40: the newest", created_at=start + timedelta(seconds=40)))
    db.commit()
    page.wait_for_selector("#job-log :text('line 40: the newest')", timeout=10_000)
    assert last_line_visible(page), "after the swap the newest line is in view"
    page.wait_for_timeout(100)  # past htmx's settle
    assert last_line_visible(page)
    shoot(page, str(SHOTS / f"ui-job-log-{backend}.png"))

    # The reader scrolls up to read; the next swaps keep their place.
    page.evaluate("document.getElementById('job-log').scrollBy(0, -120)")
    page.wait_for_timeout(100)
    place = page.evaluate("(() => { const l = document.getElementById('job-log'); return l.scrollHeight - l.clientHeight + l.scrollTop; })()")
    assert not last_line_visible(page)
    db.add(JobLog(job_id=job.id, level="warning", message="line 41", created_at=start + timedelta(seconds=41)))
    db.commit()
    page.wait_for_selector("#job-log :text('line 41')", timeout=10_000)
    page.wait_for_timeout(100)
    now = page.evaluate("(() => { const l = document.getElementById('job-log'); return l.scrollHeight - l.clientHeight + l.scrollTop; })()")
    assert abs(now - place) <= 1, (place, now)
    assert not last_line_visible(page), "the reader's place is kept"

    # Back at the end, the box follows the newest line again.
    page.evaluate("document.getElementById('job-log').scrollTop = 0")
    page.wait_for_timeout(100)
    db.add(JobLog(job_id=job.id, level="info", message="line 42", created_at=start + timedelta(seconds=42)))
    db.commit()
    page.wait_for_selector("#job-log :text('line 42')", timeout=10_000)
    assert last_line_visible(page)
    assert not problems, problems
    assert page.evaluate("window.__csp") == []


# --- the search trials table at 1366 px --------------------------------------------------------


def search_with_trials(db, settings, ds) -> Job:
    """A search job and its Optuna study: eight trials of the default space (every param
    searched), finished, pruned, failed, running and waiting, from workers with long names."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState

    from app.search import storage as st

    job = Job(dataset_id=ds.id, kind="search", params={"n_trials": 8, "metric": "macro_f1", "pruner": "median"},
              status="running", progress=0.5, attempts=1, max_attempts=3, cancel_requested=False, started_at=utcnow())
    db.add(job)
    db.commit()
    db.refresh(job)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna's tables outlive the tests' table wipes: an earlier test's job with this id may have left a study.
    try:
        optuna.delete_study(study_name=st.study_name(job.id), storage=st.get_storage(settings))
    except KeyError:
        pass
    study = optuna.create_study(study_name=st.study_name(job.id), storage=st.get_storage(settings), direction="maximize")
    study.set_user_attr("job_token", st.job_token(job.created_at))
    space = {
        "batch_size": CategoricalDistribution([32, 64, 128]), "epochs": IntDistribution(4, 8),
        "label_smoothing": FloatDistribution(0.05, 0.2), "loss": CategoricalDistribution(["cross_entropy", "label_smoothing"]),
        "lr": FloatDistribution(1e-4, 0.1, log=True), "optimizer": CategoricalDistribution(["adamw", "adam", "radam", "ranger", "sgd"]),
        "weight_decay": FloatDistribution(1e-5, 0.1, log=True),
    }
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
              TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING]
    for i, state in enumerate(states):
        params = {"batch_size": [32, 64, 128][i % 3], "epochs": 4 + i % 5, "label_smoothing": 0.05 + 0.0123456 * i,
                  "loss": ["cross_entropy", "label_smoothing"][i % 2], "lr": 0.000123456 * (i + 1),
                  "optimizer": ["adamw", "adam", "radam", "ranger", "sgd"][i % 5], "weight_decay": 1.23456e-05 * (i + 1)}
        finished = state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        attrs = {"worker": f"worker-{i}-gpu-node-{i:02d}.cluster.example.internal", "job_id": job.id}
        if state == TrialState.FAIL:
            attrs["error"] = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)"
        started = datetime(2026, 1, 1, 9, 0) + timedelta(minutes=40 * i) if state != TrialState.WAITING else None
        study.add_trial(optuna.trial.FrozenTrial(
            number=i, trial_id=i, state=state, value=0.8 + 0.01 * i if state == TrialState.COMPLETE else None,
            values=None, datetime_start=started,
            datetime_complete=started + timedelta(seconds=1234.5 + 97.3 * i) if finished else None,
            params=params if state != TrialState.WAITING else {},
            distributions=space if state != TrialState.WAITING else {},
            intermediate_values={e: 0.5 + 0.04 * e for e in range(1, 4 + i % 3)} if finished or state == TrialState.RUNNING else {},
            user_attrs=attrs, system_attrs={},
        ))
    return job


def test_the_search_trials_fit_at_1366_px_and_name_each_column_once(live_server, browser, db, settings, backend):
    ds = make_dataset(db, task="tabular")
    job = search_with_trials(db, settings, ds)
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/jobs/{job.id}/search")
    page.wait_for_selector("#trials tbody tr")
    assert page.locator("#trials tbody tr").count() == 8
    shoot(page, str(SHOTS / f"ui-search-1366-{backend}.png"), full_page=True)
    sizes = page.evaluate("""() => {
        const doc = document.documentElement, table = document.getElementById('trials');
        const wrap = table.parentElement;
        return {page: [doc.scrollWidth, doc.clientWidth], table: table.getBoundingClientRect().width,
                wrap: [wrap.scrollWidth, wrap.clientWidth, getComputedStyle(wrap).overflowX]};
    }""")
    assert sizes["page"][0] <= sizes["page"][1], f"the page scrolls sideways: {sizes}"
    # Every param of the default space fits the card at 1366 px; a wider space would scroll in it.
    assert sizes["wrap"][2] == "auto" and sizes["wrap"][0] <= sizes["wrap"][1], f"the table overflows its card: {sizes}"
    headers = [h.strip().lower() for h in page.locator("#trials thead th").all_inner_texts()]
    assert len(headers) == len(set(headers)), headers
    assert "epochs" in headers and "epochs run" in headers, "the searched param and the epochs each trial ran"
    assert page.locator("#trial-3 .trial-note").get_attribute("title").startswith("RuntimeError: CUDA out of memory")
    assert not problems, problems


# --- a phone: 390 x 844, touch ------------------------------------------------------------------


def phone(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    return context.new_page()


def test_on_a_phone_the_class_buttons_follow_the_sample_and_key_hints_are_gone(live_server, browser, db, backend):
    from tests.web.review_builders import confident, make_run

    classes = ["positive", "negative", "neutral", "mixed", "off topic"]
    ds = make_dataset(db, task="text", classes=classes, name="reviews")
    samples = add_samples(db, ds, [{"label": classes[i % 5], "text": f"Review {i}: the battery lasts two days, "
                                    "the screen scratches easily and the box came open."} for i in range(6)])
    make_run(db, ds, {s.id: confident(classes[(i + 1) % 5], classes, 0.8) for i, s in enumerate(samples)})
    page = phone(browser)
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "annotator"))
    page.goto(f"{live_server}/datasets/{ds.id}/review")
    page.wait_for_selector("#review-panel [data-sample]")
    assert page.evaluate("matchMedia('(hover: none)').matches || matchMedia('(pointer: coarse)').matches")
    # (A full-page shot would drop the touch emulation while it draws: this one shows the page as it is.)
    shoot(page, str(SHOTS / f"ui-review-phone-{backend}.png"))
    stage = page.locator(".stage").bounding_box()
    buttons = page.locator(".class-buttons").bounding_box()
    assert buttons["y"] >= stage["y"] + stage["height"], "below the sample"
    assert buttons["y"] - (stage["y"] + stage["height"]) < 60, "right under it, nothing between"
    assert buttons["y"] < page.locator(".probs").bounding_box()["y"], "before the model's probabilities"
    assert buttons["y"] + buttons["height"] <= 844 + 200, "within reach without a long scroll"
    # Keyboard hints mean nothing on a touch screen.
    assert page.locator("#review-panel kbd").count() > 0
    assert page.evaluate("Array.from(document.querySelectorAll('#review-panel kbd')).every(k => !k.offsetParent)")
    assert not page.locator(".keys").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # A tap on a class sets it and brings the next sample.
    first = page.locator("#review-panel [data-sample]").get_attribute("data-sample")
    page.locator(".class-button", has_text="neutral").tap()
    page.wait_for_function(f"() => document.querySelector('#review-panel [data-sample]').dataset.sample !== '{first}'")
    assert not problems, problems
    assert page.evaluate("window.__csp") == []


def test_on_a_phone_the_matrix_and_the_per_class_table_scroll_in_their_boxes(live_server, browser, db, backend):
    ds, _ = digits_dataset(db)
    page = phone(browser)
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/datasets/{ds.id}")
    page.wait_for_selector("#confusion")
    page.locator("#confusion").scroll_into_view_if_needed()
    shoot(page, str(SHOTS / f"ui-overview-phone-{backend}.png"))
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), \
        "the page itself never scrolls sideways"
    for table in ("#confusion", "#per-class"):
        box = page.evaluate(f"""() => {{
            const t = document.querySelector('{table}'), wrap = t.closest('.table-wrap');
            const cell = t.querySelector('tbody td');
            return {{scrolls: getComputedStyle(wrap).overflowX, wide: wrap.scrollWidth, shown: wrap.clientWidth,
                     right: wrap.getBoundingClientRect().right, cell: cell.getBoundingClientRect().width,
                     font: parseFloat(getComputedStyle(cell).fontSize)}};
        }}""")
        assert box["scrolls"] == "auto" and box["right"] <= 390, (table, box)
        assert box["wide"] > box["shown"], (table, "wider than the phone: it scrolls in its box", box)
        assert box["cell"] >= 32 and box["font"] >= 12, (table, "cells keep a readable size", box)
    # The class names stay in view while a table scrolls sideways.
    for table, label in (("#confusion", "tbody th.row-label"), ("#per-class", "tbody th[scope=row]")):
        page.locator(table).evaluate("t => t.closest('.table-wrap').scrollLeft = 200")
        assert page.locator(table).evaluate("t => t.closest('.table-wrap').scrollLeft") > 0
        name = page.locator(f"{table} {label}").first.bounding_box()
        left = page.locator(table).evaluate("t => t.closest('.table-wrap').getBoundingClientRect().left")
        assert name["x"] >= left - 1, (table, "the class names stick to the left edge", name, left)
    shoot(page, str(SHOTS / f"ui-overview-phone-scrolled-{backend}.png"))
    assert not problems, problems


# --- chart legends ------------------------------------------------------------------------------

LEGENDS = """() => Array.from(document.querySelectorAll('canvas[data-drawn=true]')).map(c => {
    const chart = Chart.getChart(c);
    return [c.dataset.chart, chart.legend.legendItems.map((item, i) => ({
        text: item.text, fill: item.fillStyle, stroke: item.strokeStyle, width: item.lineWidth,
        dash: (item.lineDash || []).length, style: item.pointStyle || 'rect', radius: item.borderRadius || 0,
        colour: chart.data.datasets[item.datasetIndex].backgroundColor,
        box: chart.legend.legendHitBoxes[i] ? [chart.legend.legendHitBoxes[i].height] : []}))];
})"""


def uniform(charts: list) -> list[str]:
    """What is not uniform about the legend markers of the charts."""
    wrong = []
    for name, items in charts:
        assert items, name
        for item in items:
            if item["width"] != 0 or item["dash"] or item["style"] != "rect" or item["radius"] != 0:
                wrong.append(f"{name} {item['text']}: outline {item['width']}, dash {item['dash']}, {item['style']}")
            if not (item["fill"] == item["stroke"] == item["colour"]):
                wrong.append(f"{name} {item['text']}: {item['fill']} / {item['stroke']} for {item['colour']}")
    return wrong


def test_every_chart_legend_marker_is_the_same_filled_square(live_server, browser, db, backend):
    ds, _ = digits_dataset(db)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/datasets/{ds.id}")
    page.wait_for_function("() => document.querySelectorAll('canvas[data-drawn=true]').length === 3")
    charts = page.evaluate(LEGENDS)
    assert [name for name, _ in charts] == ["distribution", "per_class", "history"]
    assert uniform(charts) == []
    page.locator("canvas[data-chart=history]").scroll_into_view_if_needed()
    shoot(page, str(SHOTS / f"ui-legends-{backend}.png"))

    # The job page's curves: two solid lines and a dashed accuracy line, all the same square.
    run = Run(dataset_id=ds.id, status="succeeded", params={}, label_version=ds.label_version,
              history=epochs(["fold 1", "final"], 4), info={}, finished_at=utcnow())
    db.add(run)
    db.commit()
    job = Job(dataset_id=ds.id, kind="train", params={}, status="succeeded", progress=1.0, attempts=1, max_attempts=3,
              cancel_requested=False, run_id=run.id, started_at=utcnow(), finished_at=utcnow())
    db.add(job)
    db.commit()
    page.goto(f"{live_server}/jobs/{job.id}")
    page.wait_for_selector("#loss-chart[data-drawn=true]")
    charts = page.evaluate(LEGENDS)
    assert [[i["text"] for i in items] for _, items in charts] == [["train loss", "valid loss", "accuracy"]]
    assert uniform(charts) == []
    assert not problems, problems


# --- the advisor --------------------------------------------------------------------------------


def test_the_advice_reads_one_line_each_and_opens_its_numbers_on_demand(live_server, browser, db, backend):
    ds, _ = digits_dataset(db)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = watch(page)
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/datasets/{ds.id}")
    items = page.locator("#advice .advice-item")
    assert items.count() >= 3
    heights = [items.nth(i).locator(".advice-line").bounding_box()["height"] for i in range(items.count())]
    assert max(heights) <= 40, f"one line each: {heights}"
    assert not any(r.is_visible() for r in page.locator("#advice .advice-reason").all()), "the reasoning waits"
    assert not page.locator("#advice .advice-numbers").first.is_visible()
    page.locator("#advice .advice-item summary").first.click()
    assert page.locator("#advice .advice-numbers").first.is_visible()
    assert page.locator("#advice .advice-reason").first.is_visible()
    page.locator("#advice").scroll_into_view_if_needed()
    shoot(page, str(SHOTS / f"ui-advice-{backend}.png"))
    assert not problems, problems
    assert page.evaluate("window.__csp") == []
