"""The quality profile of bench/annotators.py (`--profile quality`): ten simulated annotators
with known error rates (one at 30%) answer a second-opinion queue (overlap 3) through the
REST API until it is empty. Then the consensus's estimated accuracies are ranked against the
true ones (Spearman), and the consensus labels and a plain majority vote over the same
answers are scored against the true classes.

The seed is bench/annotators.py's: a tabular dataset whose given labels are 10% flipped, and
one run whose probabilities are drawn around each sample's true class (no model trained),
which the consensus uses as the model. An annotator answers the true class with probability
1 - error, else another class at random; each loops GET /queue?limit=1 then POST
/samples/{id}/annotations, with no pause. The answers that complete a sample are timed
apart: they fit the consensus over every answer in the dataset.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import random
import sys
import time
from collections import Counter, defaultdict

import numpy as np

import annotators as bench

ERRORS = [0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.18, 0.22, 0.30]
OVERLAP = 3


async def _annotate(i: int, http, ds_id: int, error: float, truth: dict[int, str], times: dict, statuses: Counter):
    rng = random.Random(1000 + i)
    while True:
        t0 = time.perf_counter()
        r = await http.get(f"/api/v1/datasets/{ds_id}/queue", params={"limit": "1", "order": "id"})
        times["fetch"].append(time.perf_counter() - t0)
        if r.status_code != 200:
            statuses[f"fetch {r.status_code}"] += 1
            return
        items = r.json()["items"]
        if not items:
            await http.delete(f"/api/v1/datasets/{ds_id}/queue")
            return
        sid = items[0]["id"]
        true = truth[sid]
        label = true if rng.random() >= error else rng.choice([c for c in bench.CLASSES if c != true])
        t0 = time.perf_counter()
        a = await http.post(f"/api/v1/samples/{sid}/annotations", json={"label": label, "seconds": 3.0})
        took = time.perf_counter() - t0
        statuses[f"answer {a.status_code}"] += 1
        if a.status_code == 201:
            times["deciding answer" if a.json()["consensus"] else "answer"].append(took)


async def _run(base: str, seeded, truth: dict[int, str]) -> tuple[dict, Counter, float]:
    import httpx

    clients = [httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=120, verify=False)
               for t in seeded.tokens[: len(ERRORS)]]
    times: dict[str, list[float]] = defaultdict(list)
    statuses: Counter = Counter()
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(_annotate(i, c, seeded.dataset_id, ERRORS[i], truth, times, statuses)
                               for i, c in enumerate(clients)))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return times, statuses, time.perf_counter() - t0


def _engineer_token(url: str) -> str:
    from app.auth.service import create_token, create_user
    from app.db import get_engine, session_scope

    with session_scope(get_engine(url)) as session:
        user, _ = create_user(session, "bench-engineer", "engineer", "bench-password-123")
        return create_token(session, user, "bench")[1]


def _set_overlap(url: str, ds_id: int) -> None:
    from sqlalchemy import update

    from app.db import get_engine, session_scope
    from app.models import Dataset

    with session_scope(get_engine(url)) as session:
        session.execute(update(Dataset).where(Dataset.id == ds_id).values(settings={"overlap": OVERLAP}))


def _scores(url: str, ds_id: int, truth: dict[int, str]) -> dict:
    """Consensus and majority-vote accuracy over the samples with every answer in."""
    from sqlalchemy import select

    from app.db import get_engine, session_scope
    from app.models import Annotation, SampleConsensus

    with session_scope(get_engine(url), readonly=True) as session:
        answers = defaultdict(list)
        for sid, label in session.execute(select(Annotation.sample_id, Annotation.label)
                                          .where(Annotation.dataset_id == ds_id).order_by(Annotation.id)):
            answers[sid].append(label)
        consensus = {sid: (state, label) for sid, state, label in session.execute(
            select(SampleConsensus.sample_id, SampleConsensus.state, SampleConsensus.label)
            .where(SampleConsensus.dataset_id == ds_id))}
    complete = [sid for sid, labels in answers.items() if len(labels) >= OVERLAP]
    rng = random.Random(0)
    vote_right = cons_right = ties = vote_ties = 0
    for sid in complete:
        counts = Counter(answers[sid])
        top = max(counts.values())
        best = [c for c, n in counts.items() if n == top]
        vote_ties += len(best) > 1
        vote_right += rng.choice(sorted(best)) == truth[sid]
        state, label = consensus.get(sid, (None, None))
        ties += state == "tie"
        cons_right += state in ("decided", "resolved") and label == truth[sid]
    n = max(1, len(complete))
    return {"complete": len(complete), "consensus": cons_right / n, "vote": vote_right / n, "ties": ties,
            "vote_ties": vote_ties, "answers": sum(len(v) for v in answers.values())}


def _decision_cost(url: str, ds_id: int, reps: int = 20) -> dict:
    """Side by side on the final answers: a full fit (what deciding a sample costs while the
    dataset has few answers, or when it refits) and deciding one sample with a fit's
    estimates (app.labels.annotations.decide, past FULL_FIT_BELOW answers); and how often the
    two ways decide the same label over every answered sample."""
    from statistics import median

    from app.db import get_engine, session_scope
    from app.labels import annotations
    from app.models import Dataset

    with session_scope(get_engine(url), readonly=True) as session:
        ds = session.get(Dataset, ds_id)
        full, one = [], []
        for _ in range(reps):
            t = time.perf_counter()
            fitted = annotations.fit_dataset(session, ds)
            full.append((time.perf_counter() - t) * 1000)
        est = fitted.fit.estimates(fitted.users, len(fitted.rows))
        for sid in fitted.samples[:reps]:
            t = time.perf_counter()
            annotations._decide_with(session, ds, [sid], est)
            one.append((time.perf_counter() - t) * 1000)
        decided, index = annotations._decide_with(session, ds, fitted.samples, est)
        same = np.mean([decided.label[index[sid]] == fitted.fit.label[i] for i, sid in enumerate(fitted.samples)])
    return {"full": median(full), "one": median(one), "same": float(same), "answers": len(fitted.rows),
            "threshold": annotations.FULL_FIT_BELOW, "growth": annotations.REFIT_GROWTH}


def run(args) -> None:
    import httpx
    from scipy.stats import spearmanr

    from app.db import create_postgres_database, dispose_engines, drop_postgres_database
    from app.migrate import upgrade

    started = time.perf_counter()
    url = create_postgres_database(args.postgres_url, args.database)
    upgrade(url)
    rng = np.random.default_rng(0)
    seeded = bench.seed(url, args.samples, len(ERRORS), rng)
    truth = seeded.truth
    _set_overlap(url, seeded.dataset_id)
    engineer = _engineer_token(url)
    port = bench.free_port()
    server = bench.start_server(url, port, args.workers, bench.WORK / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        times, statuses, wall = asyncio.run(_run(base, seeded, truth))
        body = httpx.get(f"{base}/api/v1/datasets/{seeded.dataset_id}/agreement",
                         headers={"Authorization": f"Bearer {engineer}"}, timeout=120).json()
    finally:
        bench.stop_server(server)
    scores = _scores(url, seeded.dataset_id, truth)
    cost = _decision_cost(url, seeded.dataset_id)
    dispose_engines()
    if not args.keep_database:
        drop_postgres_database(args.postgres_url, args.database)

    names = {f"annotator{i:02d}": i for i in range(len(ERRORS))}
    estimated = {names[a["username"]]: a for a in body["annotators"] if a["username"] in names}
    order = sorted(estimated)
    rho = spearmanr([estimated[i]["estimated_accuracy"] for i in order], [1 - ERRORS[i] for i in order]).statistic
    rows = [[f"annotator{i:02d}", f"{ERRORS[i]:.0%}", f"{1 - ERRORS[i]:.2f}", f"{estimated[i]['estimated_accuracy']:.3f}",
             f"{estimated[i]['agreement']:.3f}" if estimated[i]["agreement"] is not None else "-",
             str(estimated[i]["annotations"])] for i in order]
    table = bench.markdown_table(["annotator", "error rate", "true accuracy", "estimated accuracy",
                                  "agreement with consensus", "answers"], rows)
    timing = bench.markdown_table(
        ["request", "n", "p50 ms", "p95 ms", "p99 ms"],
        [[k, str(len(v)), f"{bench.pct(v, 50):.1f}", f"{bench.pct(v, 95):.1f}", f"{bench.pct(v, 99):.1f}"]
         for k, v in times.items()])
    verdicts = [
        f"- Spearman between estimated and true accuracy: {rho:.3f} (target >= 0.9: {'met' if rho >= 0.9 else 'not met'})",
        f"- consensus accuracy {scores['consensus']:.3f} against majority vote {scores['vote']:.3f} over "
        f"{scores['complete']} samples with {OVERLAP} answers ({'beats' if scores['consensus'] > scores['vote'] else 'does not beat'} "
        f"the vote; {scores['ties']} ties sent to a reviewer count as wrong; the vote broke {scores['vote_ties']} ties at random)",
        f"- Fleiss' kappa {body['kappa']:.3f} over {body['kappa_samples']} samples; the model agrees with the consensus "
        f"on {body['model_accuracy']:.3f}",
        f"- {scores['answers']} answers in {wall:.0f} s; statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
        f"- deciding a sample at {cost['answers']} answers, alone (p50 of 20): a full fit {cost['full']:.1f} ms against "
        f"{cost['one']:.1f} ms with a fit's estimates ({cost['full'] / max(cost['one'], 1e-9):.0f}x); the two decide the "
        f"same label on {cost['same']:.1%} of the answered samples. A decision fits in full below {cost['threshold']} "
        f"answers and when the answers grew by {cost['growth']:.0%} since the last fit, else uses the estimates.",
    ]
    text = "\n".join(verdicts)
    print(table)
    print(timing)
    print(text)
    print(f"total {time.perf_counter() - started:.0f}s")
    if args.quick:
        return
    command = " ".join(["`.venv/bin/python", "bench/annotators.py"] + sys.argv[1:]) + "`"
    bench.write_section("quality", f"""# Who to trust: simulated annotators with known error rates

{command}, {dt.date.today().isoformat()}, {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}),
Python {platform.python_version()}, Postgres on the same machine, uvicorn with {args.workers} workers. {args.samples}
samples of 10 classes, overlap {OVERLAP}; {len(ERRORS)} annotators answer the queue through the REST API (GET
/queue?limit=1, POST /samples/{{id}}/annotations) with no pause until it is empty; annotator i answers the true class
with probability 1 - error. The model is the seeded run (synthetic probabilities around the true class). Estimated
accuracy and agreement are from GET /datasets/{{id}}/agreement; accuracies are scored on the samples with every answer in.

{table}

{text}

Latency (client side, with the ten annotators at once, no pause: the two cores are saturated, so these are mostly
queueing): an answer that completes its sample decides it (docs/annotations.md, Cost).

{timing}
""")
    print(f"wrote {bench.RESULTS.relative_to(bench.ROOT)} (quality)")
