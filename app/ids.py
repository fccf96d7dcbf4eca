"""Ids as the edge takes them: whole numbers in the range the id columns hold.

Every id column is a 32-bit integer on Postgres (SQLite's are 64-bit), so an id outside
1..MAX_ID names nothing. Taken as `int` alone, such an id reached the database and came back
as a 500 (an overflow on either database); these types refuse it with 422 before any query.
Use them for every id in a path, query, form or body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Path, Query
from pydantic import Field

MAX_ID = 2**31 - 1

PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
RequiredQueryId = Annotated[int, Query(ge=1, le=MAX_ID)]
FormId = Annotated[int | None, Form(ge=1, le=MAX_ID)]
RequiredFormId = Annotated[int, Form(ge=1, le=MAX_ID)]
# A version (of a sample) is an integer column too; versions start at 1.
FormVersion = Annotated[int | None, Form(ge=1, le=MAX_ID)]
RequiredFormVersion = Annotated[int, Form(ge=1, le=MAX_ID)]
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]


def in_range(value: int) -> bool:
    """Whether an id parsed from free text (a cursor, an undo step) can name a row."""
    return 1 <= value <= MAX_ID
