"""Links to pages, for the services that put them in their answers (advice links to the queue)."""

from __future__ import annotations

from urllib.parse import urlencode


def review_url(dataset_id: int, **query: str | None) -> str:
    """The review queue of a dataset, filtered (label=given class, predicted=predicted class)."""
    params = {k: v for k, v in query.items() if v is not None}
    return f"/datasets/{dataset_id}/review" + (f"?{urlencode(params)}" if params else "")
