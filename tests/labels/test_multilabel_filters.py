"""A multi-label dataset's class filters mean "the tag set holds this class", for the given set
and the predicted one, in every order (score orders walk their index with the check on each
entry); LIKE's wildcards and case in class names match only themselves; a value with the
separator is a whole set, matched exactly (both databases)."""

from __future__ import annotations

import csv
import io

import pytest

from app.datasets import tagsets
from tests.builders import add_samples, make_user
from tests.datasets.test_multilabel import make_multilabel

TAGS = ["Cat", "a_b", "axb", "cat"]
GIVEN = ["cat", "Cat", "a_b", "axb", "a_b|axb", "Cat|cat", "", "a_b|cat", "axb|cat", None]
# The model's sets: probability 0.9 for the tags in it, 0.1 for the others.
PREDICTED = ["cat", "cat", "axb", "axb", "a_b", "Cat", "", "a_b|cat", "cat", "a_b"]


def setup(db):
    ds = make_multilabel(db, classes=TAGS)
    samples = add_samples(db, ds, [{"split": "train" if g is not None else "unlabelled", "label": g,
                                    "external_id": f"t{i}"} for i, g in enumerate(GIVEN)])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["external_id", *TAGS])
    for s, pred in zip(samples, PREDICTED):
        tags = tagsets.to_list(pred) or []
        w.writerow([s.external_id, *[0.9 if t in tags else 0.1 for t in TAGS]])
    return ds, samples, buf.getvalue().encode()


@pytest.mark.parametrize("order", ["id", "priority", "loss", "self_confidence"])
def test_class_filters_match_the_sets_that_hold_the_class(client, db, order):
    ds, samples, content = setup(db)
    eng, ann = make_user(db, "engineer"), make_user(db, "annotator")
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.csv", content)},
                    data={"name": "m", "out_of_fold": "true", "normalize": "none"}, headers=eng.headers)
    assert r.status_code == 201, r.text

    def listed(**params) -> set[str]:
        r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": order, "limit": 100, **params},
                       headers=ann.headers)
        assert r.status_code == 200, r.text
        return {item["external_id"] for item in r.json()["items"]}

    def holding(sets: list, tag: str) -> set[str]:
        return {f"t{i}" for i, g in enumerate(sets) if g is not None and tag in (tagsets.to_list(g) or [])}

    for tag in TAGS:
        assert listed(label=tag) == holding(GIVEN, tag), tag
    # Predicted sets: the run stores the thresholded set; these probabilities put it at PREDICTED.
    for tag in ("cat", "a_b"):
        assert listed(predicted=tag) == holding(PREDICTED, tag), tag
    assert listed(label="cat", predicted="a_b") == holding(GIVEN, "cat") & holding(PREDICTED, "a_b")
    assert listed(label="a_b|axb") == {"t4"}  # a whole set: exactly
    assert listed(label="cat", split="train", reviewed="false") == holding(GIVEN, "cat")
