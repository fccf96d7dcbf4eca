from sqlalchemy import select

from app.models import SnapshotItem
from tests.builders import add_samples, make_dataset


def test_create_list_get_dataset(client, engineer):
    r = client.post(
        "/api/v1/datasets", json={"name": "flowers", "task": "image", "classes": ["rose", "tulip"]},
        headers=engineer.headers,
    )
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["classes"] == ["rose", "tulip"] and ds["label_version"] == 0
    assert ds["counts"] == {"train": 0, "valid": 0, "test": 0, "unlabelled": 0, "excluded": 0}
    assert [d["name"] for d in client.get("/api/v1/datasets", headers=engineer.headers).json()] == ["flowers"]
    assert client.get(f"/api/v1/datasets/{ds['id']}", headers=engineer.headers).json()["task"] == "image"


def test_duplicate_name_conflicts_and_bad_bodies_are_422(client, engineer):
    body = {"name": "x", "task": "text"}
    assert client.post("/api/v1/datasets", json=body, headers=engineer.headers).status_code == 201
    assert client.post("/api/v1/datasets", json=body, headers=engineer.headers).status_code == 409
    for bad in ({"name": "y", "task": "audio"}, {"name": " ", "task": "text"},
                {"name": "z", "task": "text", "classes": ["a", "a"]}):
        assert client.post("/api/v1/datasets", json=bad, headers=engineer.headers).status_code == 422


def test_counts_per_split(client, db, annotator):
    ds = make_dataset(db)
    add_samples(db, ds, [{"label": "a"}, {"label": "b", "split": "valid"}, {"label": None}, {"label": None}])
    counts = client.get(f"/api/v1/datasets/{ds.id}", headers=annotator.headers).json()["counts"]
    assert counts == {"train": 1, "valid": 1, "test": 0, "unlabelled": 2, "excluded": 0}


def test_snapshot_freezes_labels(client, db, engineer, annotator):
    ds = make_dataset(db)
    s1, s2 = add_samples(db, ds, [{"label": "a"}, {"label": "b"}])
    snap = client.post(f"/api/v1/datasets/{ds.id}/snapshots", json={"name": "v1"}, headers=engineer.headers)
    assert snap.status_code == 201, snap.text
    assert snap.json()["sample_count"] == 2 and snap.json()["label_version"] == 0
    r = client.patch(f"/api/v1/samples/{s1.id}", json={"label": "c"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200
    db.expire_all()
    items = db.scalars(select(SnapshotItem).where(SnapshotItem.snapshot_id == snap.json()["id"])).all()
    assert {(i.sample_id, i.label) for i in items} == {(s1.id, "a"), (s2.id, "b")}
    listed = client.get(f"/api/v1/datasets/{ds.id}/snapshots", headers=annotator.headers).json()
    assert [s["name"] for s in listed] == ["v1"]
    # Annotators review; they do not cut snapshots.
    assert client.post(f"/api/v1/datasets/{ds.id}/snapshots", headers=annotator.headers).status_code == 403


def test_settings_take_only_known_keys(client, db, engineer):
    r = client.post(
        "/api/v1/datasets",
        json={"name": "s1", "task": "tabular", "settings": {"description": "loans", "features": ["age", "income"]}},
        headers=engineer.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["settings"] == {"unlabelled_joins_train": True, "description": "loans", "features": ["age", "income"],
                                    "overlap": 1}
    for settings, field in (
        ({"anything": {"nested": "x" * 100}}, "anything"),
        ({"unlabelled_joins_train": "sometimes"}, "unlabelled_joins_train"),
        ({"features": ["a", "a"]}, "features"),
        ({"description": "x" * 3000}, "description"),
        ({"overlap": 0}, "overlap"),
        ({"overlap": 11}, "overlap"),
    ):
        r = client.post("/api/v1/datasets", json={"name": "s2", "task": "tabular", "settings": settings},
                        headers=engineer.headers)
        assert r.status_code == 422, settings
        assert field in str(r.json()), r.text
    r = client.post("/api/v1/datasets", json={"name": "s3", "task": "text", "settings": {"features": ["a"]}},
                    headers=engineer.headers)
    assert r.status_code == 422 and "tabular" in r.text


def test_settings_stored_before_the_schema_read_back_without_their_unknown_keys(client, db, annotator):
    ds = make_dataset(db, settings={"unlabelled_joins_train": False, "legacy": 1})
    settings = client.get(f"/api/v1/datasets/{ds.id}", headers=annotator.headers).json()["settings"]
    assert settings == {"unlabelled_joins_train": False, "description": None, "features": None, "overlap": 1}
