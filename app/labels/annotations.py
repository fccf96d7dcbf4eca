"""Second opinions: several annotators answer a sample blind, and a consensus decides its label
(docs/annotations.md).

With overlap k = 1 (the default) an annotator's answer is the label: the queue's keys and
PATCH change the sample, and the answer is kept beside it (app.labels.records). With k > 1
the queue hands a sample only to annotators who have not answered it, the answer is kept
and the sample left as it is, and the k-th answer decides: the consensus of all answers and
the model's out-of-fold probabilities (app.labels.consensus) becomes the label, or, too
close to call, the sample waits in the disagreement queue for a reviewer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, Invalid, NotFound
from app.labels import records, service
from app.labels.claims import release_sample
from app.labels.consensus import Consensus, Decided, Estimates, crowdlab, decide_with
from app.labels.schemas import SampleUpdate
from app.models import Annotation, ConsensusState, Dataset, Prediction, Sample, SampleConsensus, User, utcnow
from app.runs.service import latest_run_id

MAX_OVERLAP = 10


def overlap_of(ds: Dataset) -> int:
    """How many independent answers the dataset asks for per sample (settings.overlap, 1);
    always 1 on a multi-label dataset (refuse_multilabel), whatever an older setting says."""
    if ds.multilabel:
        return 1
    value = (ds.settings or {}).get("overlap", 1)
    return value if isinstance(value, int) and 1 <= value <= MAX_OVERLAP else 1


MULTILABEL_ANSWERS = ("a multi-label dataset takes one answer per sample, its tag set (PATCH the sample): answers "
                      "under an overlap and their consensus take one class (docs/annotations.md)")


def refuse_multilabel(ds: Dataset, field: str) -> None:
    """A 422 naming `field` on a multi-label dataset: the consensus and the agreement weigh one
    class per answer, so they refuse tag sets rather than count them wrongly."""
    if ds.multilabel:
        raise Invalid(MULTILABEL_ANSWERS, errors=[{"field": field, "message": MULTILABEL_ANSWERS}])


@dataclass
class Answered:
    """What an answer did: how many answers the sample has now, and its consensus when decided."""

    sample: Sample
    answers: int
    consensus: SampleConsensus | None


def annotate(session: Session, ds: Dataset, sample_id: int, user: User, label: str, k: int,
             seconds: float | None = None) -> Answered:
    """Keep the user's answer for a sample of a k > 1 queue; the k-th answer decides."""
    s = session.get(Sample, sample_id)
    if s is None or s.dataset_id != ds.id:
        raise NotFound(f"sample {sample_id} not found in dataset {ds.id}")
    refuse_multilabel(ds, "label")
    if label not in ds.classes:
        raise Invalid(f"label must be one of the dataset's classes, not {label!r}",
                      errors=[{"field": "label", "message": f"expected one of {', '.join(ds.classes)}"}])
    # One answer at a time per sample (FOR UPDATE; SQLite's write lock): two answers racing
    # would each count only itself and leave a complete sample pending.
    session.execute(select(Sample.id).where(Sample.id == s.id).with_for_update())
    session.refresh(s)
    row = session.get(SampleConsensus, s.id, populate_existing=True)
    if (row is not None and row.state != ConsensusState.pending) or s.reviewed:
        raise Conflict(f"sample {s.id} is decided already; a reviewer can still change it")
    records.record(session, ds.id, s.id, user.id, label, seconds)
    release_sample(session, s.id, user.id)
    answers = records.count(session, s.id)
    if answers >= k:
        decided = decide(session, ds, [s.id])[0]
    else:
        _mark_pending(session, ds, s.id, answers, row)
        decided = None
    session.refresh(s)
    return Answered(s, answers, decided)


def take_back(session: Session, ds: Dataset, sample_id: int, user: User) -> Sample:
    """Withdraw the user's answer for a sample not decided yet (an undo in the queue);
    VersionConflict once its answers are complete."""
    s = session.get(Sample, sample_id)
    if s is None or s.dataset_id != ds.id:
        raise NotFound(f"sample {sample_id} not found in dataset {ds.id}")
    row = session.get(SampleConsensus, sample_id)
    if row is not None and row.state != ConsensusState.pending:
        raise service.VersionConflict(s, s.version)
    records.drop(session, sample_id, user.id)
    _mark_pending(session, ds, sample_id, records.count(session, sample_id), row)
    return s


def _mark_pending(session: Session, ds: Dataset, sample_id: int, answers: int, row: SampleConsensus | None) -> None:
    """Keep the pending record of a sample with some answers (none left: no record), which
    lets its queue hand it out before samples nobody has started."""
    if answers == 0:
        if row is not None:
            session.delete(row)
        return
    row = row or SampleConsensus(sample_id=sample_id, dataset_id=ds.id, quality=0.0, agreement=0.0, rule="crowdlab")
    row.state, row.label, row.annotations, row.decided_at = ConsensusState.pending, None, answers, utcnow()
    session.add(row)
    session.flush()


def pending_ids(session: Session, ds: Dataset, user: User, n: int, leave_out: tuple[int, ...] = ()) -> list[int]:
    """Up to n samples with some answers but not yet enough, that the user has not answered,
    oldest first (one index range of `consensus`: as many as there are samples in progress)."""
    query = (select(SampleConsensus.sample_id)
             .where(SampleConsensus.dataset_id == ds.id, SampleConsensus.state == ConsensusState.pending,
                    ~exists().where(Annotation.sample_id == SampleConsensus.sample_id, Annotation.user_id == user.id))
             .order_by(SampleConsensus.decided_at, SampleConsensus.sample_id).limit(n + len(leave_out)))
    return [sid for sid in session.scalars(query) if sid not in leave_out][:n]


# --- the consensus ------------------------------------------------------------------------


@dataclass
class Fitted:
    """The consensus of a dataset's answers: the fit and the indexes it is over."""

    fit: Consensus
    samples: list[int]  # sample ids, by index
    users: list[int]  # user ids, by index
    rows: list[tuple[int, int, str, float | None]]  # (sample id, user id, label, seconds) of every answer
    classes: list[str]


def fit_dataset(session: Session, ds: Dataset) -> Fitted | None:
    """The consensus over every answer in the dataset, with the latest run's probabilities;
    None without answers, or on a multi-label dataset (its answers are tag sets)."""
    if ds.multilabel:
        return None
    rows = session.execute(
        select(Annotation.sample_id, Annotation.user_id, Annotation.label, Annotation.seconds)
        .where(Annotation.dataset_id == ds.id).order_by(Annotation.id)
    ).all()
    rows = [r for r in rows if r[2] in ds.classes]
    if not rows:
        return None
    classes = list(ds.classes)
    cls = {c: i for i, c in enumerate(classes)}
    samples = sorted({r[0] for r in rows})
    users = sorted({r[1] for r in rows})
    s_ix = {sid: i for i, sid in enumerate(samples)}
    u_ix = {uid: i for i, uid in enumerate(users)}
    probs = model_probs(session, ds, samples, classes)
    fit = crowdlab(np.array([s_ix[r[0]] for r in rows]), np.array([u_ix[r[1]] for r in rows]),
                   np.array([cls[r[2]] for r in rows]), len(samples), len(users), len(classes), probs)
    return Fitted(fit, samples, users, [tuple(r) for r in rows], classes)


def model_probs(session: Session, ds: Dataset, sample_ids: list[int], classes: list[str]) -> np.ndarray | None:
    """The latest run's probabilities for these samples (rows in sample_ids' order), or None
    without a run. A run keeps each sample's top 5 classes: the rest of the mass is shared
    evenly by the other classes; a sample the run did not score gets uniform probabilities."""
    run_id = latest_run_id(session, ds.id)
    if run_id is None:
        return None
    k = len(classes)
    out = np.full((len(sample_ids), k), 1.0 / k)
    index = {sid: i for i, sid in enumerate(sample_ids)}
    col = {c: j for j, c in enumerate(classes)}
    for start in range(0, len(sample_ids), 5000):
        chunk = sample_ids[start:start + 5000]
        query = select(Prediction.sample_id, Prediction.probs).where(Prediction.run_id == run_id,
                                                                     Prediction.sample_id.in_(chunk))
        for sid, top in session.execute(query):
            row = np.zeros(k)
            for c, p in (top or {}).items():
                if c in col and isinstance(p, int | float) and np.isfinite(p):
                    row[col[c]] = max(0.0, float(p))
            rest = max(0.0, 1.0 - row.sum())
            missing = row == 0
            if missing.any():
                row[missing] = rest / missing.sum()
            total = row.sum()
            out[index[sid]] = row / total if total > 0 else 1.0 / k
    return out


# Deciding a sample refits the consensus over every answer while the dataset has few
# (FULL_FIT_BELOW), and otherwise once its answers grew by REFIT_GROWTH since this process's
# last fit; in between, completing samples are decided with that fit's estimates, reading only
# their own answers. The fits' cost then grows with the answers, not with their square.
FULL_FIT_BELOW = 2000
REFIT_GROWTH = 0.2
_estimates: dict[tuple, tuple[Estimates, int]] = {}  # dataset -> (the last fit's, answers decided since)
_estimates_lock = threading.Lock()


def decide(session: Session, ds: Dataset, sample_ids: list[int]) -> list[SampleConsensus]:
    """Decide these complete samples by the dataset's consensus: apply the label (source
    "consensus", marked reviewed) or record a tie for a reviewer."""
    key = (ds.id, ds.created_at)
    with _estimates_lock:
        cached = _estimates.get(key)
    if cached is None or cached[0].answers < FULL_FIT_BELOW or cached[1] >= REFIT_GROWTH * cached[0].answers:
        fitted = fit_dataset(session, ds)
        if fitted is None:
            return []
        decided, index, since = fitted.fit, {sid: i for i, sid in enumerate(fitted.samples)}, 0
        est = fitted.fit.estimates(fitted.users, len(fitted.rows))
    else:
        est, since = cached
        decided, index = _decide_with(session, ds, sample_ids, est)
    with _estimates_lock:
        _estimates[key] = (est, since + int(sum(decided.count[index[sid]] for sid in sample_ids if sid in index)))
    out = []
    for sid in sample_ids:
        if sid not in index:
            continue
        i = index[sid]
        label = ds.classes[int(decided.label[i])]
        tie = bool(decided.tie[i])
        row = session.get(SampleConsensus, sid) or SampleConsensus(sample_id=sid, dataset_id=ds.id)
        row.state = ConsensusState.tie if tie else ConsensusState.decided
        row.label, row.rule = label, "crowdlab"
        row.quality, row.agreement = float(decided.quality[i]), float(decided.agreement[i])
        row.annotations, row.decided_at = int(decided.count[i]), utcnow()
        session.add(row)
        if not tie:
            s = session.get(Sample, sid)
            service.change_sample(session, sid, s.version, SampleUpdate(label=label), None, "consensus")
        out.append(row)
    session.flush()
    return out


def _decide_with(session: Session, ds: Dataset, sample_ids: list[int], est: Estimates) -> tuple[Decided, dict[int, int]]:
    """These samples decided from their own answers with a fit's estimates; and their indexes."""
    classes = list(ds.classes)
    cls = {c: i for i, c in enumerate(classes)}
    rows = [r for r in session.execute(
        select(Annotation.sample_id, Annotation.user_id, Annotation.label)
        .where(Annotation.sample_id.in_(sample_ids)).order_by(Annotation.id)
    ) if r[2] in cls]
    samples = sorted({r[0] for r in rows})
    index = {sid: i for i, sid in enumerate(samples)}
    probs = model_probs(session, ds, samples, classes)
    decided = decide_with(est, np.array([index[r[0]] for r in rows], dtype=np.int64), [r[1] for r in rows],
                          np.array([cls[r[2]] for r in rows], dtype=np.int64), len(samples), len(classes), probs)
    return decided, index


def resolve(session: Session, ds: Dataset, sample_id: int, version: int, label: str, user: User) -> Sample:
    """A reviewer's label for a sample whose answers disagree (a tie, or a decided sample they
    overrule): applied like any change, with the consensus marked as the reviewer's."""
    row = session.get(SampleConsensus, sample_id)
    if row is None or row.dataset_id != ds.id:
        raise NotFound(f"sample {sample_id} has no consensus to resolve in dataset {ds.id}")
    s, _ = service.change_sample(session, sample_id, version, SampleUpdate(label=label), user, "annotator")
    row.state, row.rule, row.label, row.decided_at = ConsensusState.resolved, "reviewer", label, utcnow()
    session.flush()
    return s


def disagreements(session: Session, ds: Dataset, offset: int, limit: int) -> list[SampleConsensus]:
    """Up to limit + 1 samples whose answers disagree from offset: ties waiting for a reviewer
    first, then decided samples by the consensus's quality, lowest (most uncertain) first."""
    return list(session.scalars(
        select(SampleConsensus)
        .where(SampleConsensus.dataset_id == ds.id, SampleConsensus.agreement < 1,
               SampleConsensus.state.in_([ConsensusState.tie, ConsensusState.decided]))
        .order_by((SampleConsensus.state != ConsensusState.tie), SampleConsensus.quality, SampleConsensus.sample_id)
        .offset(offset).limit(limit + 1)
    ))


def answers_of(session: Session, sample_ids: list[int]) -> dict[int, list[tuple[str, str, float | None]]]:
    """Per sample, the (username, label, seconds) of its answers, oldest first; one query."""
    out: dict[int, list[tuple[str, str, float | None]]] = {sid: [] for sid in sample_ids}
    query = (select(Annotation.sample_id, User.username, Annotation.label, Annotation.seconds)
             .join(User, User.id == Annotation.user_id)
             .where(Annotation.sample_id.in_(sample_ids)).order_by(Annotation.id))
    for sid, username, label, seconds in session.execute(query):
        out[sid].append((username, label, seconds))
    return out


def pending_count(session: Session, ds: Dataset) -> int:
    """Samples with some answers but fewer than asked for."""
    query = select(func.count()).select_from(SampleConsensus).where(
        SampleConsensus.dataset_id == ds.id, SampleConsensus.state == ConsensusState.pending)
    return int(session.scalar(query) or 0)
