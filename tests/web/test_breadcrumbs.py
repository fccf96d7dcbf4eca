"""Every breadcrumb trail ends with the page it is on (aria-current), not with a separator."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from tests.builders import make_dataset, make_user
from tests.web.session import login

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NAV = re.compile(r'<nav class="crumbs"[^>]*>(.*?)</nav>', re.S)


@pytest.mark.parametrize("path", sorted(p.name for p in TEMPLATES.glob("*.html") if 'class="crumbs"' in p.read_text()
                                        and "<nav" in p.read_text()))
def test_no_trail_ends_with_a_separator(path):
    for trail in NAV.findall((TEMPLATES / path).read_text()):
        assert not trail.rstrip().endswith('<span aria-hidden="true">/</span>'), path
        assert 'aria-current="page"' in trail, path


def test_rendered_trails_end_with_the_page_name(client, db):
    ds = make_dataset(db, classes=["a", "b"], name="cats")
    eng = make_user(db, "engineer")
    login(client, eng.user.username)
    for url, current in ((f"/datasets/{ds.id}", "cats"), (f"/datasets/{ds.id}/team", "Team"),
                         (f"/datasets/{ds.id}/jobs", "Jobs"), (f"/datasets/{ds.id}/train", "Train")):
        trail = NAV.search(client.get(url).text).group(1)
        text = re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", "", trail))).strip()
        assert text.endswith(f"/ {current}") and text.startswith("Datasets /"), (url, text)

