"""Agreement among annotators and each annotator's quality (docs/annotations.md).

Agreement is Fleiss' kappa (statsmodels) over the samples that have the most common number of
answers (Fleiss' kappa needs the same number of raters per item), overall and per class (the
class against all others: the category-specific kappa). An annotator's numbers come from the
dataset's consensus fit (app.labels.annotations.fit_dataset), which the report may reuse for a
while on a dataset with many answers (REFRESH_SECONDS).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime
from statistics import median

import numpy as np
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from statsmodels.stats.inter_rater import fleiss_kappa

from app.labels import annotations
from app.labels.annotations import Fitted, overlap_of, pending_count
from app.models import Annotation, Dataset, Role, User, utcnow
from app.runs.service import latest_run_id


class ClassAgreement(BaseModel):
    label: str
    kappa: float | None = Field(description="Fleiss' kappa of this class against all others; null when undefined")
    answers: int = Field(description="answers that gave this class, on the samples counted")


class Confusion(BaseModel):
    consensus: str
    answered: str
    count: int


class AnnotatorStats(BaseModel):
    user_id: int
    username: str
    annotations: int
    compared: int = Field(description="their answers on samples with another answer or a model to compare with")
    agreement: float | None = Field(description="share of their answers on multi-answer samples equal to the consensus")
    estimated_accuracy: float = Field(description="the consensus fit's estimate (docs/annotations.md)")
    median_seconds: float | None
    confusions: list[Confusion] = Field(description="the classes they give most often where the consensus says another")


class AgreementRead(BaseModel):
    overlap: int = Field(description="answers the dataset asks for per sample")
    annotations: int
    samples: int = Field(description="samples with at least one answer")
    multi_answer_samples: int
    pending: int = Field(description="samples with some answers, waiting for more")
    kappa: float | None = Field(description="Fleiss' kappa over the samples with `raters` answers each")
    raters: int | None
    kappa_samples: int
    per_class: list[ClassAgreement]
    model_accuracy: float | None = Field(description="the model's agreement with the consensus, as the fit estimates it")
    annotators: list[AnnotatorStats] = Field(description="everyone's for engineers and admins; an annotator's own otherwise")
    as_of: datetime = Field(description="when the consensus fit behind these numbers was made (docs/annotations.md)")


# A report over many answers (at least FULL_FIT_BELOW, where a fit starts to cost) is kept
# per server process and served again while the answers are unchanged, or for up to
# REFRESH_SECONDS after it was made while they change: an active team's page views then fit
# at most that often. Below, every view fits afresh (cheap). `as_of` says when it was made.
REFRESH_SECONDS = 30.0
_reports: dict[tuple, tuple[float, tuple, AgreementRead]] = {}
_reports_lock = threading.Lock()


def agreement(session: Session, ds: Dataset, viewer: User) -> AgreementRead:
    report = _report(session, ds)
    people = report.annotators
    if Role(viewer.role).rank < Role.engineer.rank:
        people = [p for p in people if p.user_id == viewer.id]
    return report.model_copy(update={"annotators": people, "overlap": overlap_of(ds),
                                     "pending": pending_count(session, ds)})


def _report(session: Session, ds: Dataset) -> AgreementRead:
    key = (ds.id, ds.created_at)
    # What the fit depends on: the answers (their count and newest id) and the model's run.
    answers = (*session.execute(select(func.count(Annotation.id), func.max(Annotation.id))
                                .where(Annotation.dataset_id == ds.id)).one(), latest_run_id(session, ds.id))
    with _reports_lock:
        cached = _reports.get(key)
    now = time.monotonic()
    if cached is not None and (cached[1] == answers or (cached[2].annotations >= annotations.FULL_FIT_BELOW
                                                        and now - cached[0] < REFRESH_SECONDS)):
        return cached[2]
    report = _fresh(session, ds)
    with _reports_lock:
        _reports[key] = (now, answers, report)
    return report


def _fresh(session: Session, ds: Dataset) -> AgreementRead:
    fitted = annotations.fit_dataset(session, ds)
    if fitted is None:
        return AgreementRead(overlap=overlap_of(ds), annotations=0, samples=0, multi_answer_samples=0,
                             pending=0, kappa=None, raters=None, kappa_samples=0, per_class=[],
                             model_accuracy=None, annotators=[], as_of=utcnow())
    fit = fitted.fit
    kappa, raters, kappa_samples, per_class = _kappas(fitted)
    return AgreementRead(
        overlap=overlap_of(ds), annotations=len(fitted.rows), samples=len(fitted.samples),
        multi_answer_samples=int((fit.count > 1).sum()), pending=0, kappa=kappa,
        raters=raters, kappa_samples=kappa_samples, per_class=per_class, model_accuracy=fit.model_accuracy,
        annotators=_annotators(session, fitted), as_of=utcnow(),
    )


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _kappas(fitted: Fitted) -> tuple[float | None, int | None, int, list[ClassAgreement]]:
    k = len(fitted.classes)
    cls = {c: i for i, c in enumerate(fitted.classes)}
    s_ix = {sid: i for i, sid in enumerate(fitted.samples)}
    table = np.zeros((len(fitted.samples), k))
    for sid, _, label, _ in fitted.rows:
        table[s_ix[sid], cls[label]] += 1
    n = table.sum(axis=1)
    multi = n[n > 1]
    if not len(multi):
        return None, None, 0, [ClassAgreement(label=c, kappa=None, answers=0) for c in fitted.classes]
    raters = int(Counter(multi.tolist()).most_common(1)[0][0])
    rated = table[n == raters]
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = _finite(fleiss_kappa(rated, method="fleiss")) if len(rated) > 1 else None
        per_class = []
        for j, c in enumerate(fitted.classes):
            binary = np.stack([rated[:, j], raters - rated[:, j]], axis=1)
            per_class.append(ClassAgreement(label=c, kappa=_finite(fleiss_kappa(binary, method="fleiss"))
                                            if len(rated) > 1 else None, answers=int(rated[:, j].sum())))
    return overall, raters, int(len(rated)), per_class


def _annotators(session: Session, fitted: Fitted) -> list[AnnotatorStats]:
    fit = fitted.fit
    s_ix = {sid: i for i, sid in enumerate(fitted.samples)}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(fitted.users))).all())
    by_user: dict[int, list] = {uid: [] for uid in fitted.users}
    for sid, uid, label, seconds in fitted.rows:
        by_user[uid].append((s_ix[sid], label, seconds))
    out = []
    for u, uid in enumerate(fitted.users):
        rows = by_user[uid]
        multi = [(i, label) for i, label, _ in rows if fit.count[i] > 1]
        agree = [fitted.classes[int(fit.label[i])] == label for i, label in multi]
        wrong = Counter((fitted.classes[int(fit.label[i])], label) for i, label in multi
                        if fitted.classes[int(fit.label[i])] != label)
        seconds = [s for _, _, s in rows if s is not None]
        out.append(AnnotatorStats(
            user_id=uid, username=names.get(uid, f"user {uid}"), annotations=len(rows),
            compared=len(multi) if fit.model_weight == 0 else len(rows),
            agreement=float(np.mean(agree)) if agree else None,
            estimated_accuracy=float(fit.accuracy[u]), median_seconds=float(median(seconds)) if seconds else None,
            confusions=[Confusion(consensus=a, answered=b, count=n) for (a, b), n in wrong.most_common(3)],
        ))
    return sorted(out, key=lambda a: (-a.estimated_accuracy, a.username))
