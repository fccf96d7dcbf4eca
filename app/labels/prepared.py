"""Statements run prepared with Postgres's generic plan from their first run on a connection:
the merged listings of app.labels.queries (docs/queries.md, Orders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session


@dataclass
class BoundStatement:
    """A cached statement with the values to run it with; its limit is the `lim` value."""

    stmt: Any
    params: dict

    def limit(self, n: int) -> BoundStatement:
        return BoundStatement(self.stmt, {**self.params, "lim": n})

    def bound(self):
        """The statement with its values bound in (to compile, explain or rewrite it)."""
        return self.stmt.params(**self.params)


def run_generic(session: Session, stmt: BoundStatement) -> list:
    """The rows of a merged listing with Postgres's generic plan from its first run on a connection.

    Its plan does not depend on the values (every range is an equality prefix of an index),
    but planning it for them costs about 10 ms for 20-44 ranges, more than running it. By
    default psycopg prepares a statement at its sixth run and Postgres plans the first five
    runs of a prepared one for their values: a page of the review queue would pay that on
    each of the pool's connections. Here the statement is prepared at once and planned
    once (docs/queries.md, Orders); statements of other transactions keep the default."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return session.execute(stmt.stmt, stmt.params).all()
    from psycopg.pq import TransactionStatus

    driver = conn.connection.driver_connection
    threshold, driver.prepare_threshold = driver.prepare_threshold, 0
    if not driver.autocommit:
        # Inside a transaction (the usual case) the setting is the transaction's: its end
        # sets it back, so one round trip, not two. Only prepared statements follow it, and
        # those left in the transaction (the claims' upsert by primary key) plan alike.
        conn.exec_driver_sql("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
        try:
            return session.execute(stmt.stmt, stmt.params).all()
        finally:
            driver.prepare_threshold = threshold
    # A connection in autocommit mode has no transaction: set for the session, and set back after.
    before = conn.exec_driver_sql(
        "SELECT current_setting('plan_cache_mode'), set_config('plan_cache_mode', 'force_generic_plan', false)"
    ).scalar()
    try:
        return session.execute(stmt.stmt, stmt.params).all()
    finally:
        driver.prepare_threshold = threshold
        if driver.info.transaction_status != TransactionStatus.INERROR:
            conn.exec_driver_sql("SELECT set_config('plan_cache_mode', %(mode)s, false)", {"mode": before})
