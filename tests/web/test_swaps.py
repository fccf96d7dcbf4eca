"""A multi-label run's swaps matrix on the dataset page: every count it draws (a swap of two
tags, a tag missed, a tag wrongly added) links to the review queue filtered to exactly the
samples behind it, and the REST listing and the grid list that many (both databases)."""

from __future__ import annotations

import csv
import html as htmllib
import io
import re
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from app.datasets import tagsets
from app.models import Run
from tests.builders import add_samples, make_user
from tests.datasets.test_multilabel import make_multilabel
from tests.web.session import htmx, login

TAGS = ["cat", "dog", "bird"]


def swapped_dataset(db, client):
    """Given sets in every split, and an external run whose sets flip about one tag in four."""
    rng = np.random.default_rng(11)
    rows, predicted = [], []
    for split, n in (("train", 20), ("valid", 40), ("test", 30)):
        for _ in range(n):
            given = [t for t in TAGS if rng.random() < 0.45]
            rows.append({"split": split, "label": "|".join(given)})
            predicted.append([t for t in TAGS if (t in given) != (rng.random() < 0.25)])
    ds = make_multilabel(db, classes=TAGS)
    samples = add_samples(db, ds, [{**r, "external_id": f"s{i}"} for i, r in enumerate(rows)])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["external_id", *TAGS])
    for i, (s, tags) in enumerate(zip(samples, predicted)):
        w.writerow([s.external_id, *[0.8 + 0.001 * (i % 7) if t in tags else 0.2 - 0.001 * (i % 5) for t in TAGS]])
    eng = make_user(db, "engineer")
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.csv", buf.getvalue().encode())},
                    data={"name": "m", "out_of_fold": "true", "normalize": "none"}, headers=eng.headers)
    assert r.status_code == 201, r.text
    return ds, db.get(Run, r.json()["id"])


def links(page: str, table: str) -> list[tuple[dict[str, str], int]]:
    """(query of the link, the count it shows) for every linked count in the table."""
    body = re.search(rf'<table class="heatmap" id="{table}">(.*?)</table>', page, re.S).group(1)
    return [(dict(parse_qsl(urlsplit(htmllib.unescape(href)).query)), int(n))
            for href, n in re.findall(r'<a href="([^"]+)"[^>]*>(\d+)</a>', body)]


@pytest.mark.parametrize("order", ["id", "priority"])
def test_each_count_of_the_swaps_matrix_opens_exactly_its_samples(client, db, annotator, order):
    ds, run = swapped_dataset(db, client)
    csrf = login(client, annotator.user.username)
    for split in ("valid", "test"):
        swaps = run.metrics[split]["swaps"]
        page = client.get(f"/datasets/{ds.id}", params={"matrix": split}).text
        assert 'id="swaps"' in page and 'id="confusion"' not in page
        found = links(page, "swaps")
        # Every nonzero cell and margin is linked, and nothing else is.
        cells = sum(1 for row in swaps["matrix"] for n in row if n)
        margins = sum(1 for n in swaps["missed"] + swaps["extra"] if n)
        assert cells >= 2 and len(found) == cells + margins
        seen = set()
        for params, count in found:
            assert params.pop("split") == split and set(params) <= {"missed", "extra"}
            a, b = TAGS.index(params.get("extra", "")) if "extra" in params else None, \
                TAGS.index(params["missed"]) if "missed" in params else None
            expected = (swaps["matrix"][a][b] if a is not None and b is not None
                        else swaps["missed"][b] if b is not None else swaps["extra"][a])
            assert count == expected, params
            seen.add((a, b))
            r = client.get(f"/api/v1/datasets/{ds.id}/samples",
                           params={"split": split, "order": order, "limit": 500, **params}, headers=annotator.headers)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert len(items) == count, (params, count, len(items))
            for item in items:  # what each filter means, checked on the sets themselves
                given, pred = set(item["labels"]), set(tagsets.to_list(item["prediction"]["label"]))
                if "missed" in params:
                    assert params["missed"] in given - pred
                if "extra" in params:
                    assert params["extra"] in pred - given
            # The link's own page: the queue, here as its grid, lists the same samples.
            grid = client.get(f"/datasets/{ds.id}/review/grid", params={"split": split, "order": order, **params}).text
            assert len(re.findall(r'name="ids" value="(\d+):\d+"', grid)) == count
        assert len(seen) == len(found)
    # The split switch swaps in the other split's matrix.
    r = client.get(f"/datasets/{ds.id}/confusion", params={"split": "test"}, headers=htmx(csrf))
    assert 'data-swaps' in r.text and links(r.text, "swaps") == links(
        client.get(f"/datasets/{ds.id}", params={"matrix": "test"}).text, "swaps")


def test_missed_and_extra_are_refused_where_they_mean_nothing(client, db, annotator):
    ds, _ = swapped_dataset(db, client)
    url = f"/api/v1/datasets/{ds.id}/samples"
    r = client.get(url, params={"missed": "horse"}, headers=annotator.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "missed"
    from tests.builders import make_dataset
    single = make_dataset(db, "tabular", classes=TAGS)
    r = client.get(f"/api/v1/datasets/{single.id}/samples", params={"extra": "cat"}, headers=annotator.headers)
    assert r.status_code == 422 and "multi-label" in r.json()["detail"]


def test_the_queue_opened_from_a_cell_names_its_filters_and_keeps_them(client, db, annotator):
    ds, run = swapped_dataset(db, client)
    login(client, annotator.user.username)
    params, count = next((p, n) for p, n in links(client.get(f"/datasets/{ds.id}").text, "swaps")
                         if "missed" in p and "extra" in p)
    html = client.get(f"/datasets/{ds.id}/review", params=params).text
    assert f"· missed {params['missed']} · extra {params['extra']}" in html
    # The filter bar shows them chosen, and the panel's form carries them on to the next sample.
    assert re.search(rf'<select name="missed"[^>]*>.*?<option value="{params["missed"]}" selected>', html, re.S)
    assert f'<input type="hidden" name="extra" value="{params["extra"]}">' in html
    r = client.get(f"/datasets/{ds.id}/review/progress", params=params, headers=htmx())
    assert re.search(rf"\b0 of {count}\b", r.text), r.text


def test_a_run_stored_before_the_plain_counts_draws_its_pairs_without_margins(client, db, annotator):
    ds, run = swapped_dataset(db, client)
    run.metrics = {split: {**m, "swaps": {k: v for k, v in m["swaps"].items() if k in ("labels", "matrix")}}
                   for split, m in run.metrics.items()}
    db.commit()
    login(client, annotator.user.username)
    page = client.get(f"/datasets/{ds.id}").text
    found = links(page, "swaps")
    assert found and all(set(p) == {"split", "missed", "extra"} for p, _ in found)
    assert sorted(n for _, n in found) == sorted(n for row in run.metrics["valid"]["swaps"]["matrix"] for n in row if n)
