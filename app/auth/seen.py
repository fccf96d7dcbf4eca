"""When a token or session was last used: stamped beside the request, never by it.

Writing the stamp in the request's own session would make every such request a writer (on
SQLite, holding the database's write lock to its end). Writing it on a second connection
from the request pool, taken while the request holds its own, can wait on a pool emptied by
the very requests that want it: fifty clients sharing one token all find its stamp a minute
old at once. So the stamp goes through a connection of its own, outside the pool, in a
transaction of its own that waits at most a moment for a lock and is skipped if it cannot
have it (the next request tries again). One write per row is in flight at a time in a
process; the others do not wait for it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from app.models import ApiToken, UserSession

# A stamp is refreshed when it is older than this, so that most requests write nothing.
SEEN_EVERY = timedelta(seconds=60)

_pending: set[tuple[str, str, int]] = set()
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def is_stale(stamp: datetime | None, now: datetime) -> bool:
    return stamp is None or now - stamp > SEEN_EVERY


def _side_engine(engine: Engine) -> Engine:
    """An engine on the same database whose connections are opened per use, not pooled."""
    from app.db import make_engine

    url = engine.url.render_as_string(hide_password=False)
    with _lock:
        side = _engines.get(url)
        if side is None:
            side = _engines[url] = make_engine(url, poolclass=NullPool)
        return side


def stamp(engine: Engine, model: type[ApiToken] | type[UserSession], row_id: int, now: datetime) -> None:
    """Set the row's last-use stamp to `now`, best effort, unless this process is at it already."""
    key = (str(engine.url), model.__tablename__, row_id)
    with _lock:
        if key in _pending:
            return
        _pending.add(key)
    column = "last_used_at" if model is ApiToken else "last_seen_at"
    sqlite = engine.dialect.name == "sqlite"
    try:
        with _side_engine(engine).connect() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=50" if sqlite else "SET lock_timeout = '50ms'")
            conn.execute(update(model).where(model.id == row_id).values({column: now}))
            conn.commit()
    except SQLAlchemyError:
        pass  # locked, or the database is away: a stamp is not worth an error
    finally:
        with _lock:
            _pending.discard(key)

