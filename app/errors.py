"""The errors Curate answers with, and the one body every API error has.

Services raise a `CurateError` (not found, conflict, invalid with field errors, forbidden,
too large, too many requests, unavailable); the handlers in `app.main` turn it into
`ErrorBody` JSON for the API and into the error page (or an HTMX fragment) for the browser.
FastAPI's own request validation errors and Starlette's HTTP errors are answered with the
same body, so a client parses one shape whatever went wrong, and `ERROR_RESPONSES`
documents it for every route of the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorItem(BaseModel):
    """One thing wrong with a request: a field of it, or a row of an uploaded file."""

    field: str | None = Field(default=None, description="the field, column or parameter (e.g. body.params.lr, label)")
    message: str
    row: int | str | None = Field(default=None, description="imports: the file's data row (1-based) or ZIP entry")
    loc: list[str | int] | None = Field(default=None, description="request validation: where in the request")
    type: str | None = Field(default=None, description="request validation: the kind of error")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    detail: str = Field(description="what went wrong, for a person")
    errors: list[ErrorItem] = Field(default_factory=list, description="each wrong field or row, when there are any")
    more_errors: int = Field(default=0, description="wrong rows or fields beyond those listed")


class CurateError(Exception):
    """A request that cannot be honoured as asked; `status_code` says why, in HTTP's terms."""

    status_code = 400

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        more_errors: int = 0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.more_errors = more_errors
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return ErrorBody(detail=self.detail, errors=self.errors, more_errors=self.more_errors).model_dump(mode="json", exclude_defaults=True)


class BadRequest(CurateError):
    """A malformed header or parameter that is not a field of the body (e.g. If-Match)."""

    status_code = 400


class NotFound(CurateError):
    status_code = 404


class Forbidden(CurateError):
    status_code = 403


class Conflict(CurateError):
    status_code = 409


class Invalid(CurateError):
    """Bad input: `errors` names each wrong field (or row)."""

    status_code = 422


class PreconditionRequired(CurateError):
    """A change that needs the version the client saw (If-Match) came without it."""

    status_code = 428


class TooLarge(CurateError):
    status_code = 413


class TooManyRequests(CurateError):
    status_code = 429


class Unavailable(CurateError):
    status_code = 503


def field_errors(errors: list[dict[str, Any]]) -> list[ErrorItem]:
    """Pydantic's or FastAPI's validation errors as ErrorItems (loc joined into the field name)."""
    items = []
    for e in errors:
        loc = [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())]
        items.append(
            ErrorItem(
                field=".".join(str(p) for p in loc) or None,
                message=str(e.get("msg", "invalid")),
                loc=loc,
                type=str(e.get("type")) if e.get("type") is not None else None,
            )
        )
    return items


def validation_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The body of a 422 for a request that failed validation, first error first in the detail."""
    items = field_errors(errors)
    first = items[0] if items else None
    detail = f"{first.field}: {first.message}" if first and first.field else (first.message if first else "invalid request")
    if len(items) > 1:
        detail += f" (and {len(items) - 1} more)"
    return ErrorBody(detail=detail, errors=items).model_dump(mode="json", exclude_defaults=True)


def _response(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# The error answers, each documented on the routes that can give it (app.api.error_statuses;
# a route adds its own special bodies, e.g. PATCH's 409).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _response("the request is malformed (a header, a cursor)"),
    401: _response("no valid credentials: send Authorization: Bearer <token>"),
    403: _response("the credentials' role may not do this"),
    404: _response("the resource, or one that the request names, does not exist here"),
    409: _response("the request clashes with the current state"),
    413: _response("the request body is over the size limit"),
    422: _response("the request's parameters, body or file are not valid: `errors` names each"),
    428: _response("If-Match is required: send the sample's current version"),
    429: _response("too many requests: wait for Retry-After seconds"),
    503: _response("the database is unavailable or busy: retry after Retry-After seconds"),
}
