"""Real Chromium: a running job's log follows its newest line as the page polls, and stays
where the reader scrolled to while they read older lines."""

from __future__ import annotations

import pytest

from app.models import Job, JobLog
from tests.builders import make_dataset, make_user
from tests.web.browser_support import sign_in

pytestmark = pytest.mark.browser


def at_bottom(page) -> bool:
    return page.evaluate("(() => { const l = document.getElementById('job-log');"
                         " return l.scrollTop + l.clientHeight >= l.scrollHeight - 4; })()")


def test_the_log_follows_the_newest_line_unless_the_reader_scrolled_up(live_server, browser, db):
    ds = make_dataset(db, task="tabular")
    job = Job(dataset_id=ds.id, kind="train", params={"epochs": 2}, status="running", progress=0.5, attempts=1,
              max_attempts=3, cancel_requested=False)
    db.add(job)
    db.commit()
    db.add_all([JobLog(job_id=job.id, level="info", message=f"line {i}") for i in range(60)])
    db.commit()
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(page, live_server, make_user(db, "engineer"))
    page.goto(f"{live_server}/jobs/{job.id}")
    page.wait_for_selector("#job-log")
    assert page.evaluate("document.getElementById('job-log').scrollHeight > document.getElementById('job-log').clientHeight")
    assert at_bottom(page), "opened at the newest line"
    db.add(JobLog(job_id=job.id, level="info", message="line 60"))
    db.commit()
    with page.expect_response(lambda r: "part=detail" in r.url, timeout=10_000):
        pass
    page.wait_for_selector("#job-log :text('line 60')")
    assert at_bottom(page), "still following after the poll swapped the log in"
    page.evaluate("document.getElementById('job-log').scrollTop = 40")
    page.wait_for_timeout(100)
    with page.expect_response(lambda r: "part=detail" in r.url, timeout=10_000):
        pass
    page.wait_for_timeout(300)
    assert page.evaluate("document.getElementById('job-log').scrollTop") == 40, "the reader's place is kept"
