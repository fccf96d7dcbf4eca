"""Many annotators PATCH one sample at once: exactly one wins per version, nothing is lost."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from app.models import Dataset, LabelEvent, Sample
from tests.builders import add_samples, make_dataset

THREADS = 12
ROUNDS = 5


def test_concurrent_patches_one_winner_per_version(live_server, db, annotator):
    # Two classes per thread plus a starting class no thread writes.
    classes = [f"c{i}" for i in range(2 * THREADS)] + ["start"]
    ds = make_dataset(db, classes=classes)
    (s,) = add_samples(db, ds, [{"label": "start"}])
    barrier = threading.Barrier(THREADS)
    wins_per_round = [[] for _ in range(ROUNDS)]
    statuses = []
    lock = threading.Lock()

    def annotator_thread(i: int):
        wins = 0
        with httpx.Client(base_url=live_server, headers=annotator.headers, timeout=60) as http:
            for r in range(ROUNDS):
                # Everyone reads the same version, then everyone writes at once.
                version = http.get(f"/api/v1/samples/{s.id}").json()["version"]
                barrier.wait()
                # Each thread writes its own classes, alternating, so every win changes the label.
                label = classes[2 * i + wins % 2]
                resp = http.patch(
                    f"/api/v1/samples/{s.id}", json={"label": label}, headers={"If-Match": str(version)}
                )
                with lock:
                    statuses.append(resp.status_code)
                if resp.status_code == 200:
                    wins += 1
                    with lock:
                        wins_per_round[r].append((i, version))
                else:
                    assert resp.status_code == 409, resp.text
                    assert resp.json()["current"]["version"] > version
                barrier.wait()

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(annotator_thread, range(THREADS)))

    assert all(len(w) == 1 for w in wins_per_round), wins_per_round
    assert statuses.count(200) == ROUNDS
    assert statuses.count(409) == ROUNDS * (THREADS - 1)
    db.expire_all()
    sample = db.get(Sample, s.id)
    assert sample.version == ROUNDS + 1
    events = db.scalar(select(func.count()).select_from(LabelEvent).where(LabelEvent.sample_id == s.id))
    assert events == ROUNDS
    assert db.get(Dataset, ds.id).label_version == ROUNDS
    # The event chain is unbroken: each event starts where the previous one ended.
    chain = db.scalars(select(LabelEvent).where(LabelEvent.sample_id == s.id).order_by(LabelEvent.id)).all()
    assert chain[0].old_label == "start"
    for prev, nxt in zip(chain, chain[1:]):
        assert nxt.old_label == prev.new_label
    assert chain[-1].new_label == sample.label
