"""The export's columns about the annotators' answers (docs/annotations.md): consensus_label,
consensus_rule, annotations and agreement, as SQL over `annotations` and `consensus`."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from sqlalchemy import Float, String, and_, case, cast, func, literal, null, select

from app.models import Annotation, ConsensusState, Sample, SampleConsensus

CONSENSUS_COLUMNS = (("consensus_label", pa.string()), ("consensus_rule", pa.string()), ("annotations", pa.int64()),
                     ("agreement", pa.float64()))


def answer_columns(dataset_id: int, labels: Callable) -> tuple[list, Callable]:
    """The four expressions (labels: how a class name is escaped) and what joins them in: the
    dataset's answers counted per sample (one hash join, not a count per row), and the
    sample's consensus. One answer is its own consensus (rule "annotation") unless more are
    asked for (rule "pending"); a tie has no label yet."""
    answers = (
        select(Annotation.sample_id.label("sid"), func.count().label("n"), func.min(Annotation.label).label("one"))
        .where(Annotation.dataset_id == dataset_id).group_by(Annotation.sample_id).subquery()
    )
    consensus_label = case(
        (SampleConsensus.state.in_([ConsensusState.decided, ConsensusState.resolved]), SampleConsensus.label),
        (SampleConsensus.state == ConsensusState.pending, cast(null(), String)),
        (answers.c.n == 1, answers.c.one), else_=cast(null(), String))
    consensus_rule = case(
        (SampleConsensus.state.in_([ConsensusState.tie, ConsensusState.pending]), cast(SampleConsensus.state, String)),
        (SampleConsensus.sample_id.is_not(None), SampleConsensus.rule),
        (answers.c.n == 1, literal("annotation", String)), else_=cast(null(), String))
    agreement = case((and_(answers.c.n > 1, SampleConsensus.state != ConsensusState.pending), SampleConsensus.agreement),
                     else_=cast(null(), Float))
    exprs = [labels(consensus_label), consensus_rule, func.coalesce(answers.c.n, 0), agreement]

    def join(stmt):
        return stmt.outerjoin(answers, answers.c.sid == Sample.id).outerjoin(
            SampleConsensus, SampleConsensus.sample_id == Sample.id)

    return exprs, join
