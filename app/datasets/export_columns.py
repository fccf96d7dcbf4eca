"""The export's columns: their names and types, and the one SELECT that computes them all.

In order (docs/rest.md, Exports and versions):

- `id` (the external id, or the internal id when there is none; kept first and unchanged so
  that older clients and a re-import read what they always did), `sample_id` (the API's id),
  `external_id` (empty when the sample has none), `split`, `label`, `label_source`
  (original when the label is the imported one, corrected when it changed, empty for a
  sample that never had a label), `reviewed`;
- the content: `text`; `image` (blob sha256) and `image_path`; or one column per feature in
  the dataset's feature order; then, for text and image datasets, `url`: the path of the API
  route that returns the item (the sample's JSON, or the image bytes), fetched with the
  same bearer token as the export;
- the run the dataset follows (the reference run if pinned, else the newest succeeded one):
  `run_id` (set on each row the run scored, so the scores say where they come from),
  `predicted`, the scores, `flagged`, `suggested_label` and `priority`;
- the annotators' answers (app.datasets.answer_columns).

Every value is computed in SQL, so that Postgres's COPY path does no Python work per row.
Feature names are data, never SQL: the SELECT names its columns by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import Boolean, Float, Integer, String, Text, and_, case, cast, func, literal, not_, null, select, type_coerce
from sqlalchemy.orm import Session

from app.datasets.answer_columns import CONSENSUS_COLUMNS, answer_columns
from app.datasets.export_encoding import ESCAPE, ESCAPED_STARTS, escape_name
from app.datasets.tagsets import SEPARATOR
from app.models import Dataset, Prediction, Sample, SnapshotItem

STRING, INTEGER, NUMBER, BOOLEAN = pa.string(), pa.int64(), pa.float64(), pa.bool_()
# A multi-label dataset's label in JSONL and Parquet: its classes as a list (CSV keeps "a|b").
TAGS = pa.list_(pa.string())
SCORE_COLUMNS = ("loss", "self_confidence", "normalized_margin", "confusion_margin", "entropy", "aum", "combined")
HEAD_COLUMNS = (("id", STRING), ("sample_id", INTEGER), ("external_id", STRING), ("split", STRING), ("label", STRING),
                ("label_source", STRING), ("reviewed", BOOLEAN))
RUN_COLUMNS = (("run_id", INTEGER), ("predicted", STRING), *((c, NUMBER) for c in SCORE_COLUMNS), ("flagged", BOOLEAN),
               ("suggested_label", STRING), ("priority", NUMBER), ("outlier", NUMBER), ("duplicate_group", INTEGER))
CONTENT_COLUMNS = {"text": (("text", STRING),), "image": (("image", STRING), ("image_path", STRING))}
# The API route (under /api/v1) that returns a sample's item: `url` holds its path.
ITEM_ROUTES = {"text": "/api/v1/samples/{id}", "image": "/api/v1/samples/{id}/image"}
# Names a tabular feature cannot have: the export's own columns.
RESERVED = tuple(c for c, _ in (*HEAD_COLUMNS, *RUN_COLUMNS, *CONSENSUS_COLUMNS))
# How a client reads each type back: pandas dtypes (nullable where a cell may be empty) and
# JSON Schema's type names.
PANDAS_DTYPES = {STRING: "string", INTEGER: "Int64", NUMBER: "float64", BOOLEAN: "boolean", TAGS: "object"}
JSON_TYPES = {STRING: "string", INTEGER: "integer", NUMBER: "number", BOOLEAN: "boolean", TAGS: "array"}
DEFAULT_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class ExportPlan:
    """What to export, resolved in the request's session before streaming starts."""

    dataset_id: int
    task: str
    features: tuple[str, ...] = ()
    split: str | None = None
    snapshot_id: int | None = None
    run_id: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    risky_labels: bool = True  # a class name starts like a formula (or the classes are unknown)
    url_root: str = ""  # the path the app is served under ("" or "/prefix"): urls start with it
    multilabel: bool = False  # labels are tag sets: a list in JSONL and Parquet, "a|b" in CSV

    def content(self) -> list[tuple[str, pa.DataType]]:
        if self.task == "tabular":
            return [(f, NUMBER) for f in self.features]
        return [*CONTENT_COLUMNS[self.task], ("url", STRING)]

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    @property
    def schema(self) -> pa.Schema:
        """The columns as the SELECT computes them (every label as text)."""
        return pa.schema([*HEAD_COLUMNS, *self.content(), *RUN_COLUMNS, *CONSENSUS_COLUMNS])

    def label_lists(self, fmt: str) -> bool:
        """Whether the file in fmt writes the label column as a list of classes."""
        return self.multilabel and fmt != "csv"

    def file_schema(self, fmt: str) -> pa.Schema:
        """The columns as the file in fmt has them: a multi-label dataset's label is a list of
        classes in JSONL and Parquet."""
        schema = self.schema
        if self.label_lists(fmt):
            at = schema.get_field_index("label")
            schema = schema.set(at, pa.field("label", TAGS))
        return schema


def dataset_features(ds: Dataset, session: Session) -> list[str]:
    """The dataset's feature order: as imported, else the keys of its first sample."""
    names = (ds.settings or {}).get("features")
    if names:
        return list(names)
    first = session.scalar(
        select(Sample.features).where(Sample.dataset_id == ds.id, Sample.features.is_not(None)).order_by(Sample.id).limit(1)
    )
    return list(first or {})


def url_root(root_path: str) -> str:
    """The ASGI root path as the urls' prefix: "" or "/name", never ending in "/".

    Always starting with "/" also keeps the url column out of the CSV formula escape."""
    root = root_path.strip("/")
    return f"/{root}" if root else ""


def describe(plan: ExportPlan, fmt: str) -> list[dict[str, str]]:
    """Each column as {name, type, dtype}: the name as the file in fmt spells it (CSV escapes a
    header that starts like a formula), its JSON type, and the pandas dtype that reads it back
    from CSV (strings stay strings: a class named 6 is not read as a number). A multi-label
    dataset's label is an array whose `items` are strings (JSONL, Parquet), or in CSV a string
    whose classes are joined by `separator`."""
    columns = [{"name": escape_name(f.name) if fmt == "csv" else f.name, "type": JSON_TYPES[f.type],
                "dtype": PANDAS_DTYPES[f.type]} for f in plan.file_schema(fmt)]
    if plan.multilabel:
        label = next(c for c in columns if c["name"] == "label")
        label.update({"items": "string"} if plan.label_lists(fmt) else {"separator": SEPARATOR})
    return columns


def _escaped(expr):
    """SQL for escape_formulas: a leading quote on text that starts like a formula or with a quote."""
    return case((func.substr(expr, 1, 1).in_(ESCAPED_STARTS), literal(ESCAPE, String) + expr), else_=expr)


def _as_is(expr):
    return expr


def _true_false(expr):
    """A boolean as the text true or false: Postgres's COPY would write t and f, and Arrow and
    pandas read true and false (as Arrow's CSV writer writes them on SQLite)."""
    return case((expr, literal("true", String)), (not_(expr), literal("false", String)), else_=cast(null(), String))


def _item_url(plan: ExportPlan):
    """SQL for the item's path: root + route with the sample id; none for an image sample
    without an image."""
    before, after = (plan.url_root + ITEM_ROUTES[plan.task]).split("{id}")
    url = literal(before, String) + cast(Sample.id, String)
    if after:
        url = url + literal(after, String)
    return case((Sample.image_blob.is_not(None), url), else_=cast(null(), String)) if plan.task == "image" else url


def _run_columns(plan: ExportPlan, labels: Callable, boolean: Callable) -> list:
    """run_id, predicted, the scores, flagged, suggested_label, priority, outlier, duplicate_group;
    all empty without a run."""
    if plan.run_id is None:
        return [cast(null(), Integer), cast(null(), String), *(cast(null(), Float) for _ in SCORE_COLUMNS),
                boolean(cast(null(), Boolean)), cast(null(), String), cast(null(), Float), cast(null(), Float),
                cast(null(), Integer)]
    return [Prediction.run_id, labels(Prediction.label), *(getattr(Prediction, c) for c in SCORE_COLUMNS),
            boolean(Prediction.flagged), labels(Prediction.suggested_label), Prediction.priority, Prediction.outlier,
            Prediction.duplicate_group]


def select_columns(plan: ExportPlan, postgres: bool, escape: bool = False) -> tuple[list, list[tuple[str, pa.DataType]], Callable]:
    """The SELECT's expressions, the columns they return with their Arrow types, and what joins
    the answers in.

    Postgres hands out each feature as its own column (->>) and booleans as true/false
    text; SQLite hands out the features' JSON text (a "features" column), which Arrow
    parses a chunk at a time. escape: formula-escape text in SQL (Postgres writes the CSV).
    """
    if plan.snapshot_id is not None:
        split_col, label_col = SnapshotItem.split, SnapshotItem.label
    else:
        split_col, label_col = Sample.split, Sample.label
    label_source = case(
        (and_(label_col.is_(None), Sample.original_label.is_(None)), None),
        (label_col == Sample.original_label, "original"),
        else_="corrected",
    )
    # Only what can hold arbitrary text is escaped: the split, label_source, internal ids,
    # urls (they start with "/") and sha256 digests cannot start like a formula or with a
    # quote, and labels only when a class name does.
    maybe = _escaped if escape else _as_is
    labels = maybe if plan.risky_labels else _as_is
    boolean = _true_false if postgres else _as_is
    head = [func.coalesce(maybe(Sample.external_id), cast(Sample.id, String)), Sample.id, maybe(Sample.external_id),
            split_col, labels(label_col), label_source, boolean(Sample.reviewed)]
    if plan.task == "text":
        content, content_types = [maybe(Sample.text), _item_url(plan)], plan.content()
    elif plan.task == "image":
        content, content_types = [Sample.image_blob, maybe(Sample.image_path), _item_url(plan)], plan.content()
    elif postgres:
        content = [type_coerce(Sample.features.op("->>")(literal(f, String)), String) for f in plan.features]
        content_types = plan.content()
    else:
        content, content_types = [func.coalesce(cast(Sample.features, Text), "{}")], [("features", STRING)]
    consensus, with_answers = answer_columns(plan.dataset_id, labels)
    exprs = [*head, *content, *_run_columns(plan, labels, boolean), *consensus]
    columns = [*HEAD_COLUMNS, *content_types, *RUN_COLUMNS, *CONSENSUS_COLUMNS]
    assert len(exprs) == len(columns)
    return exprs, columns, with_answers


def sql_columns(plan: ExportPlan, postgres: bool) -> list[tuple[str, pa.DataType]]:
    """The columns the SELECT returns, with their Arrow types."""
    return select_columns(plan, postgres)[1]


def export_statement(plan: ExportPlan, postgres: bool, escape: bool = False):
    """One SELECT for the whole export, in sample id order; escape: formula-escape text in SQL."""
    exprs, _, with_answers = select_columns(plan, postgres, escape)
    split_col = SnapshotItem.split if plan.snapshot_id is not None else Sample.split
    # Columns are named by position: a feature name is data, and may be anything.
    stmt = select(*(e.label(f"c{k}") for k, e in enumerate(exprs))).where(Sample.dataset_id == plan.dataset_id)
    if plan.snapshot_id is not None:
        stmt = stmt.join(
            SnapshotItem, and_(SnapshotItem.sample_id == Sample.id, SnapshotItem.snapshot_id == plan.snapshot_id)
        )
    if plan.run_id is not None:
        stmt = stmt.outerjoin(Prediction, and_(Prediction.sample_id == Sample.id, Prediction.run_id == plan.run_id))
    stmt = with_answers(stmt)
    if plan.split is not None:
        stmt = stmt.where(split_col == plan.split)
    return stmt.order_by(Sample.id)
