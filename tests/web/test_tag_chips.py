"""A multi-label sample's tag sets read as tag chips wherever a page shows a label or a
prediction (grid tiles, the review panel and its flagged suggestion, a sample's history and
the dataset's, the duplicates view): never the stored "a|b" string; the empty set is
"(none)". A single-label dataset's pages keep plain class names."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from app.models import Sample

from tests.builders import make_dataset
from tests.web.multilabel_builders import make_multilabel_run, multilabel_dataset
from tests.web.session import login

SAME = "e" * 64


def chips(html: str) -> list[list[str]]:
    """The tags of every chip group on the page, in order."""
    return [re.findall(r'<span class="tag-chip[^"]*">([^<]*)</span>', group) for group in
            re.findall(r'<span class="tag-chips">((?:<span class="tag-chip[^"]*">[^<]*</span>)*)</span>', html)]


def visible(html: str) -> str:
    """The page's text, as a reader sees it: no scripts, no tags or attributes."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<script\b.*?</script>", " ", html, flags=re.S))


@pytest.fixture
def sets(db, client, annotator):
    """s0 given {cat, dog}, predicted {cat, bird}, flagged with the suggestion {cat, bird, fish},
    then relabelled {cat, dog, fish} (and left unreviewed); s1 its exact copy with the empty set, predicted {dog, fish};
    s2 given {bird, fish}, predicted {cat, bird}."""
    ds, ss = multilabel_dataset(db, [
        {"label": "cat|dog", "text": "a pet", "content_hash": SAME},
        {"label": "", "text": "a pet", "content_hash": SAME},
        {"label": "bird|fish", "text": "a bird"},
    ])
    make_multilabel_run(db, ds, {
        ss[0].id: ({"cat": 0.9, "dog": 0.2, "bird": 0.8, "fish": 0.4}, "cat|bird|fish"),
        ss[1].id: ({"cat": 0.1, "dog": 0.7, "bird": 0.2, "fish": 0.9}, None),
        ss[2].id: ({"cat": 0.8, "dog": 0.1, "bird": 0.9, "fish": 0.3}, None),
    })
    r = client.patch(f"/api/v1/samples/{ss[0].id}", json={"labels": ["cat", "dog", "fish"]},
                     headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200, r.text
    # Back in the queue, so its panel and the grid show it.
    db.execute(update(Sample).where(Sample.id == ss[0].id).values(reviewed=False))
    db.commit()
    login(client, annotator.user.username)
    return ds, ss


RAW = ("cat|dog", "cat|bird", "dog|fish", "bird|fish", "cat|dog|fish", "cat|bird|fish")


def no_raw_sets(html: str) -> None:
    text = visible(html)
    assert not [raw for raw in RAW if raw in text]


def test_grid_tiles_show_given_and_predicted_sets_as_chips(client, sets):
    ds, _ = sets
    html = client.get(f"/datasets/{ds.id}/review/grid", params={"split": "all", "order": "id"}).text
    assert chips(html) == [["cat", "dog", "fish"], ["cat", "bird"], ["(none)"], ["dog", "fish"],
                           ["bird", "fish"], ["cat", "bird"]]
    no_raw_sets(html)


def test_review_panel_shows_the_set_its_suggestion_and_history_as_chips(client, sets):
    ds, ss = sets
    html = client.get(f"/datasets/{ds.id}/review", params={"split": "all", "order": "id"}).text
    groups = chips(html)
    assert groups[0] == ["cat", "dog", "fish"]  # the given set
    assert ["cat", "bird", "fish"] in groups  # the flagged set's suggestion (and the model's set)
    assert ["cat", "dog"] in groups  # the panel's history: cat, dog -> cat, dog, fish
    no_raw_sets(html)


def test_history_pages_show_sets_as_chips(client, sets):
    ds, ss = sets
    html = client.get(f"/samples/{ss[0].id}/history").text
    groups = chips(html)
    # Label, imported as, predicted, then the change.
    assert groups[:3] == [["cat", "dog", "fish"], ["cat", "dog"], ["cat", "bird"]]
    assert ["cat", "dog"] in groups[3:] and ["cat", "dog", "fish"] in groups[3:]
    no_raw_sets(html)
    html = client.get(f"/samples/{ss[1].id}/history").text
    assert chips(html)[:3] == [["(none)"], ["(none)"], ["dog", "fish"]]
    html = client.get(f"/datasets/{ds.id}/history").text
    assert chips(html)[:2] == [["cat", "dog"], ["cat", "dog", "fish"]]
    no_raw_sets(html)


def test_duplicates_view_shows_sets_as_chips(client, sets):
    ds, _ = sets
    html = client.get(f"/datasets/{ds.id}/duplicates").text
    assert chips(html) == [["cat", "dog", "fish"], ["cat", "bird"], ["(none)"], ["dog", "fish"]]
    no_raw_sets(html)


def test_single_label_pages_keep_plain_class_names(client, db, annotator):
    ds = make_dataset(db, task="text", classes=["cat", "dog"])
    from tests.builders import add_samples
    s = add_samples(db, ds, [{"label": "cat", "text": "a cat"}])[0]
    login(client, annotator.user.username)
    html = client.get(f"/samples/{s.id}/history").text
    assert '<dd class="strong">cat</dd>' in html and "tag-chip" not in html
