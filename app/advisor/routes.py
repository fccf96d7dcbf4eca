"""GET /api/v1/datasets/{id}/advice: what to collect, relabel and prune, class by class.

Advice is for annotators and engineers alike: collect, relabel and confused-pair advice is
annotation work, and every item links to the review queue. The page's buttons that start
the experiments live with the pages (app.web.experiments).
"""

from __future__ import annotations

from fastapi import APIRouter

from app.advisor.advice import AdviceRead, advise
from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.deps import DatasetDep

router = APIRouter(tags=["runs"])


@router.get("/datasets/{dataset_id}/advice", response_model=AdviceRead, response_model_by_alias=True)
def dataset_advice(ds: DatasetDep, session: SessionDep, user: CurrentUser) -> AdviceRead:
    """Per-class advice from the latest succeeded run: collect, relabel, prune, confused_pair
    (rules in app.advisor.advice); empty with a message before the first run."""
    return advise(session, ds)
