"""The scale bench's listings and query plans.

Every documented combination of GET /api/v1/datasets/{id}/samples (order: id, random and
every score; reverse; nine filters) at the first page and at a cursor 90% deep. The deep
cursor is built from the database, not by walking pages: the listing's own statements
(app.labels.queries.listing_statements) count their rows, the one that holds the row at 90%
reads its sort keys with OFFSET, and they are encoded as the API does (base64 JSON of the
keys, docs/rest.md).

The plans: each listing's statement(s), with the listing's LIMIT, under EXPLAIN (FORMAT
JSON) on Postgres and EXPLAIN QUERY PLAN on SQLite; a sequential scan of predictions is
what the bench flags.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field

from scale_env import get_ok, repeat
from sqlalchemy import func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

PAGE, QUEUE_PAGE, DEEP = 50, 5, 0.9


@dataclass
class Listing:
    order: str
    reverse: bool
    filter: str
    params: dict  # the filter's query parameters
    limit: int
    depth: str = "first"  # or "90%"
    cursor: str | None = None
    rows: int | None = None  # rows the filter selects (known for deep listings)
    times: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)  # the untimed warm-up calls
    plans: list = field(default_factory=list)
    seq_scans: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        rev = " reverse" if self.reverse else ""
        return f"{self.order}{rev} · {self.filter} · {self.depth} · limit {self.limit}"

    def api_params(self) -> dict:
        p = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in self.params.items()}
        p |= {"order": self.order, "reverse": str(self.reverse).lower(), "limit": str(self.limit)}
        return p | ({"cursor": self.cursor} if self.cursor else {})


def filters(common: str, rare: str, predicted: str, cell: tuple[str, str], queue: str) -> list[tuple[str, dict, int]]:
    """(name, query parameters, page size) of each documented filter; the queue's page is 5."""
    return [
        ("no filter", {}, PAGE),
        ("split=train", {"split": "train"}, PAGE),
        (f"label={common} (common)", {"label": common}, PAGE),
        (f"label={rare} (rare)", {"label": rare}, PAGE),
        (f"predicted={predicted}", {"predicted": predicted}, PAGE),
        (f"label={cell[0]}&predicted={cell[1]} (confusion cell)", {"label": cell[0], "predicted": cell[1]}, PAGE),
        ("flagged=true", {"flagged": True}, PAGE),
        ("reviewed=false", {"reviewed": False}, PAGE),
        (f"queue: label={queue}&reviewed=false&split=train", {"label": queue, "reviewed": False, "split": "train"}, QUEUE_PAGE),
    ]


def orders() -> list[str]:
    from app.labels.queries import SCORES

    return ["id", "random", *SCORES]


def listings(filter_list, order_list=None, reverses=(False, True), depths=("first", "90%")) -> list[Listing]:
    return [
        Listing(o, rev, name, params, limit, depth)
        for name, params, limit in filter_list
        for o in (order_list or orders())
        for rev in reverses
        for depth in depths
    ]


# --------------------------------------------------------------------------- the dataset's classes


def pick_classes(session, ds_id: int, run_id: int) -> dict:
    """The classes the filters use: the most and least frequent given class, the most
    frequent predicted class, and the largest off-diagonal cell of the run's confusion."""
    from app.models import Prediction, Sample

    given = session.execute(
        select(Sample.label, func.count()).where(Sample.dataset_id == ds_id).group_by(Sample.label).order_by(func.count().desc())
    ).all()
    predicted = session.execute(
        select(Prediction.label, func.count()).where(Prediction.run_id == run_id).group_by(Prediction.label)
        .order_by(func.count().desc())
    ).all()
    cell = session.execute(
        select(Sample.label, Prediction.label).join(Prediction, Prediction.sample_id == Sample.id)
        .where(Prediction.run_id == run_id, Sample.label != Prediction.label)
        .group_by(Sample.label, Prediction.label).order_by(func.count().desc()).limit(1)
    ).first()
    common, rare = given[0][0], given[-1][0]
    return {"common": common, "rare": rare, "predicted": predicted[0][0],
            "cell": tuple(cell) if cell else (common, predicted[0][0]), "queue": common}


# --------------------------------------------------------------------------- statements and cursors


def sample_query(listing: Listing, run_id: int | None = None):
    from app.labels.queries import SampleQuery
    from app.models import Split

    p = listing.params
    return SampleQuery(
        split=Split(p["split"]) if "split" in p else None, label=p.get("label"), predicted=p.get("predicted"),
        order=listing.order, reverse=listing.reverse, limit=listing.limit, cursor=listing.cursor,
        run_id=run_id, reviewed=p.get("reviewed"), flagged=p.get("flagged"),
    )


def statements(session, ds, q, limit: int) -> list:
    """What a listing runs: queries.listing_statements, each with its limit, in turn (the
    cached ones with their values bound in)."""
    from app.labels import queries

    return [s.bound() if isinstance(s, queries.BoundStatement) else s
            for s in queries.listing_statements(session, ds, q, limit)[0]]


def encode_cursor(values: list) -> str:
    from app.jsonsafe import jsonable

    return base64.urlsafe_b64encode(json.dumps([jsonable(v) for v in values]).encode()).decode().rstrip("=")


def _key_columns(stmt) -> list:
    """The sort keys of a ranked select: its _k0, _k1, ... columns."""
    return [c for c in stmt.selected_columns if re.fullmatch(r"_k\d+", c.name or "")]


def deep_cursor(session, ds, listing: Listing, fraction: float = DEEP) -> tuple[str | None, int]:
    """(the cursor that lists from the row at `fraction` of the listing on, the listing's rows).
    The listing is one statement or several run in turn (app.labels.queries.listing_statements);
    each is counted, and the sort keys of the row at that depth are read from the one that
    holds it. Both queries keep the statement's joins, filters and order but select only what
    they need (a count; the sort keys), so the database does not sort whole rows to skip them."""
    q = sample_query(listing)
    q.cursor = None
    # Reads per index range limited to more rows than any dataset holds: the whole listing.
    parts = [stmt.limit(None) for stmt in statements(session, ds, q, 2**53)]
    counts = [session.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None))
              for stmt in parts]
    total = sum(counts)
    k = int(fraction * total)
    if k < 1:
        return None, total
    for stmt, count in zip(parts, counts):
        if k <= count:
            keys = stmt.with_only_columns(*_key_columns(stmt), maintain_column_froms=True)
            return encode_cursor(list(session.execute(keys.offset(k - 1).limit(1)).one())), total
        k -= count
    return None, total


def set_deep_cursors(session, ds, items: list[Listing], progress=print) -> None:
    started, done = time.perf_counter(), 0
    for item in items:
        if item.depth != "first":
            item.cursor, item.rows = deep_cursor(session, ds, item)
            done += 1
            if done % 20 == 0:
                progress(f"  deep cursors: {done} in {time.perf_counter() - started:.0f}s")


# --------------------------------------------------------------------------- timing


def time_listings(http, ds_id: int, items: list[Listing], reps: int, budget_s: float, warm: int = 1,
                  progress=print) -> None:
    """Time each listing `reps` times (fewer when slow), after `warm` calls kept apart in
    item.first: the first call of a statement shape in a server process builds it, and the
    first on a database connection prepares and plans it (docs/queries.md). With several
    server processes, warm is twice their number, so that each has likely served it once."""
    url = f"/api/v1/datasets/{ds_id}/samples"
    started = time.perf_counter()
    for n, item in enumerate(items, 1):
        if item.depth != "first" and item.cursor is None:
            continue  # the filter selects too few rows for a deep page
        params = item.api_params()
        item.first = repeat(lambda p=params: get_ok(http, url, params=p), warm, budget_s) if warm else []
        item.times = repeat(lambda p=params: get_ok(http, url, params=p), reps, budget_s)
        if n % 20 == 0:
            progress(f"  listings: {n}/{len(items)} in {time.perf_counter() - started:.0f}s")


def table_stats(session, sqlite: bool) -> str:
    """What the planner knows about samples and predictions: the plans depend on it."""
    from sqlalchemy import text

    if sqlite:
        has = session.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).first()
        rows = session.execute(text("SELECT tbl, count(*) FROM sqlite_stat1 WHERE tbl IN ('samples', 'predictions') GROUP BY tbl")).all() if has else []
        return "sqlite_stat1: " + (", ".join(f"{t} {n} index rows" for t, n in rows) or "none (never analyzed)")
    autovacuum = session.execute(text("SHOW autovacuum")).scalar()
    rows = session.execute(text(
        "SELECT relname, n_live_tup, n_mod_since_analyze, greatest(last_analyze, last_autoanalyze) "
        "FROM pg_stat_user_tables WHERE relname IN ('samples', 'predictions') ORDER BY relname")).all()
    tables = "; ".join(f"{name}: {live:,} rows, {mod:,} changed since its last analyze "
                       f"({'analyzed ' + at.strftime('%H:%M:%S') if at else 'never analyzed'})" for name, live, mod, at in rows)
    return f"autovacuum {autovacuum}; {tables}"


def analyze(session, sqlite: bool) -> None:
    """ANALYZE samples and predictions: what autovacuum does some time after a big write."""
    from sqlalchemy import text

    session.execute(text("ANALYZE" if sqlite else "ANALYZE samples, predictions"))
    session.commit()


# --------------------------------------------------------------------------- plans


class Explain(Executable, ClauseElement):
    """EXPLAIN <prefix> of a statement, compiled with its bound parameters."""

    inherit_cache = False

    def __init__(self, statement, prefix: str):
        self.statement, self.prefix = statement, prefix


@compiles(Explain)
def _compile_explain(element, compiler, **kw):
    return f"{element.prefix} {compiler.process(element.statement, **kw)}"


def explain(session, statement, sqlite: bool, text: bool = False):
    """The plan: Postgres JSON (or text), SQLite's EXPLAIN QUERY PLAN rows' details."""
    conn = session.connection()
    if sqlite:
        return [row[-1] for row in conn.execute(Explain(statement, "EXPLAIN QUERY PLAN"))]
    if text:
        return "\n".join(row[0] for row in conn.execute(Explain(statement, "EXPLAIN")))
    return conn.execute(Explain(statement, "EXPLAIN (FORMAT JSON)")).scalar()


def seq_scans(plan, sqlite: bool) -> list[str]:
    """The plan's full scans: every Seq Scan node (Postgres) or SCAN without an index (SQLite)."""
    if sqlite:
        return [d for d in plan if d.startswith("SCAN ") and "INDEX" not in d]
    found: list[str] = []

    def walk(node: dict) -> None:
        if node.get("Node Type") == "Seq Scan":
            found.append(f"Seq Scan on {node.get('Relation Name')}")
        for child in node.get("Plans", []):
            walk(child)

    for entry in plan:
        walk(entry["Plan"])
    return found


def plan_shape(item: Listing, sqlite: bool) -> str:
    """The plans' node tree without costs, literals or sort keys: the listings that share
    one differ only in a class name, a score column or a cursor value."""
    if sqlite:
        return "\n".join(re.sub(r"\(.*\)", "(...)", d) for plan in item.plans for d in plan)
    lines: list[str] = []

    def walk(node: dict, depth: int) -> None:
        where = f" on {node['Relation Name']}" if "Relation Name" in node else ""
        index = f" using {re.sub('_(loss|self_confidence|normalized_margin|confusion_margin|entropy|aum|combined|priority)$', '_<score>', node['Index Name'])}" if "Index Name" in node else ""
        lines.append("  " * depth + node["Node Type"] + where + index)
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    for plan in item.plans:
        walk(plan[0]["Plan"], 0)
    return "\n".join(lines)


def on_predictions(scans: list[str]) -> list[str]:
    return [s for s in scans if re.fullmatch(r"(Seq Scan on|SCAN) predictions\b.*", s)]


def explain_listings(session, ds, items: list[Listing], sqlite: bool) -> None:
    for item in items:
        if item.depth != "first" and item.cursor is None:
            continue
        stmts = statements(session, ds, sample_query(item), item.limit)
        item.plans = [explain(session, s, sqlite) for s in stmts]
        item.seq_scans = [s for plan in item.plans for s in seq_scans(plan, sqlite)]


def plan_text(session, ds, item: Listing, sqlite: bool) -> str:
    """The listing's SQL and its plan, readable: for the offenders."""
    out = []
    for s in statements(session, ds, sample_query(item), item.limit):
        sql = str(s.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        sql = sql if sqlite else sql.replace("%%", "%")  # psycopg's escape of a literal %
        plan = "\n".join(explain(session, s, sqlite)) if sqlite else explain(session, s, sqlite, text=True)
        out.append(f"{sql}\n\n{plan}")
    return "\n\n".join(out)


def plan_root(item: Listing, sqlite: bool) -> str:
    """A one-line summary of the first plan: its top node and estimated cost, or SQLite's steps."""
    if not item.plans:
        return ""
    plan = item.plans[0]
    if sqlite:
        return "; ".join(plan)
    top = plan[0]["Plan"]
    return f"{top['Node Type']} (cost {top['Total Cost']:.0f}, rows {top['Plan Rows']})"
