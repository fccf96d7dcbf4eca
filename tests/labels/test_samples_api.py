from tests.builders import add_samples, make_dataset


def test_health_needs_no_auth(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


def test_patch_requires_if_match(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "b"}, headers=annotator.headers)
    assert r.status_code == 428
    assert "If-Match" in r.json()["detail"]


def test_patch_relabels_writes_event_and_bumps_version(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.patch(
        f"/api/v1/samples/{s.id}",
        json={"label": "b", "reason": "looks like b"},
        headers={**annotator.headers, "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "b" and body["version"] == 2 and body["reviewed"] is True
    assert r.headers["etag"] == '"2"'
    (event,) = body["history"]
    assert (event["old_label"], event["new_label"], event["source"], event["user"]) == (
        "a", "b", "api", annotator.user.username)
    assert event["reason"] == "looks like b"
    assert client.get(f"/api/v1/datasets/{ds.id}", headers=annotator.headers).json()["label_version"] == 1


def test_stale_version_gets_409_with_current(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    h = {**annotator.headers, "If-Match": "1"}
    assert client.patch(f"/api/v1/samples/{s.id}", json={"label": "b"}, headers=h).status_code == 200
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "c"}, headers=h)
    assert r.status_code == 409
    assert r.json()["current"]["label"] == "b"
    assert r.json()["current"]["version"] == 2


def test_label_outside_classes_is_422(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": "a"}])
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "zebra"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 422
    assert "zebra" in r.json()["detail"]


def test_unlabelled_sample_that_gets_a_label_joins_train(client, db, annotator):
    ds = make_dataset(db)
    (s,) = add_samples(db, ds, [{"label": None}])
    assert s.split == "unlabelled"
    r = client.patch(f"/api/v1/samples/{s.id}", json={"label": "c"}, headers={**annotator.headers, "If-Match": "1"})
    assert r.status_code == 200
    assert (r.json()["split"], r.json()["label"]) == ("train", "c")


def test_list_paginates_by_cursor_without_gaps(client, db, annotator):
    ds = make_dataset(db)
    add_samples(db, ds, [{"label": "a"} for _ in range(7)])
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "order": "random"} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/api/v1/datasets/{ds.id}/samples", params=params, headers=annotator.headers).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 7 and len(set(seen)) == 7


def test_score_order_without_a_run_is_409(client, db, annotator):
    ds = make_dataset(db)
    r = client.get(f"/api/v1/datasets/{ds.id}/samples", params={"order": "loss"}, headers=annotator.headers)
    assert r.status_code == 409
