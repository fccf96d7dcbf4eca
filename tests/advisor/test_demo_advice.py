"""The advice a user sees on the demo after its first run.

The valid confusion matrix and train counts below are those of a real first run of the demo
(default image recipe, no pretrained weights offline, seed 0, in-sample scoring): a model of
96% valid accuracy on balanced digits with 10% of train labels flipped.
"""

from __future__ import annotations

from app.datasets.demo import CLASSES
from tests.advisor.builders import make_run, metrics_from
from tests.builders import add_samples, make_dataset
from tests.web.session import login

DEMO_VALID = [
    [23, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [0, 26, 0, 0, 0, 0, 0, 1, 1, 0],
    [0, 0, 33, 0, 0, 0, 0, 0, 1, 0],
    [0, 1, 0, 33, 0, 0, 0, 1, 0, 0],
    [0, 0, 0, 0, 27, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 22, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 37, 0, 0, 0],
    [0, 0, 0, 1, 0, 0, 0, 29, 0, 0],
    [0, 1, 0, 0, 0, 0, 0, 0, 29, 1],
    [0, 0, 0, 0, 0, 0, 0, 0, 2, 30],
]
DEMO_TRAIN = {"0": 95, "1": 106, "2": 84, "3": 113, "4": 93, "5": 99, "6": 97, "7": 112, "8": 104, "9": 97}


def test_the_demo_run_gets_all_four_kinds_where_its_numbers_warrant_them(client, db, engineer):
    ds = make_dataset(db, task="image", classes=CLASSES, name="digits-demo")
    add_samples(db, ds, [{"label": c, "split": "train", "image_blob": None} for c, n in DEMO_TRAIN.items() for _ in range(n)])
    make_run(db, ds, metrics_from(DEMO_VALID, CLASSES))
    body = client.get(f"/api/v1/datasets/{ds.id}/advice", headers=engineer.headers).json()
    got = [(i["kind"], i["class"]) for i in body["items"]]
    # 8 and 1 draw other digits into them (precision 0.88 and 0.90 against 0.96).
    assert ("relabel", "8") in got and ("relabel", "1") in got
    # No recall lags clearly. 1 is the lowest (0.93), but with 106 train samples against a
    # median of 98 it is no class to collect more of; 9 (0.94, 97 train samples) is the lowest
    # of the classes at or below the median: where to start.
    assert ("collect", "1") not in got and ("collect", "9") in got
    collect = next(i for i in body["items"] if i["kind"] == "collect")
    assert collect["numbers"]["basis"] == "lowest"
    assert collect["numbers"]["train"] <= collect["numbers"]["median_train"]
    assert "the lowest of the 5 classes with no more train samples than the median class" in collect["reason"]
    # 5: F1 0.98 with 99 train samples (median 98), and no other advice.
    assert [c for k, c in got if k == "prune"] == ["5"]
    # 8/9 are confused three times, 1/8 and 3/7 twice.
    assert [(i["pairs"][0]["a"], i["pairs"][0]["b"]) for i in body["items"] if i["kind"] == "confused_pair"] == [
        ("8", "9"), ("1", "8"), ("3", "7")
    ]
    login(client, engineer.user.username)
    html = client.get(f"/datasets/{ds.id}").text
    for kind, cls in (("collect", "9"), ("relabel", "8"), ("prune", "5"), ("confused_pair", "8")):
        assert f'data-kind="{kind}" data-class="{cls}"' in html
    assert "Run the prune experiment for 5" in html
