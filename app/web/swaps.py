"""The swaps matrix of a multi-label run as the dataset page draws it, in place of the
confusion matrix a single-label run has.

The run's metrics keep, per split, `swaps.matrix[a][b]`: the samples whose predicted set
wrongly holds a while it misses b of the given set (app.evaluation.multilabel.swap_counts),
and `missed` / `extra`: per class, the samples missing it and the samples wrongly holding it.
The page draws a row per missed class and a column per class put in its place, as the
confusion matrix draws a row per given class and a column per predicted one. Each count links
to the review queue filtered to exactly the samples behind it (`missed=b&extra=a`,
app.labels.tag_filters), on the same split.
"""

from __future__ import annotations

from typing import Any

from app.evaluation.compare import heat_level


def swaps_view(metrics: dict[str, Any] | None, top: int = 10) -> dict[str, Any] | None:
    """Heat-map rows (one per missed class: its cells per class put in its place, and how many
    samples miss it), each class's extra count and the `top` largest swaps; None without a
    swaps matrix. Runs from before the plain counts have None for missed and extra."""
    swaps = (metrics or {}).get("swaps") or {}
    labels, matrix = swaps.get("labels") or [], swaps.get("matrix") or []
    if not labels or not matrix:
        return None
    missed, extra = swaps.get("missed"), swaps.get("extra")
    rows, pairs = [], []
    for b, name in enumerate(labels):
        total = int(missed[b]) if missed is not None else None
        # Each cell's shade is its share of the samples that miss the row's class (or of the
        # row's swaps, for older runs): a sample with several wrong tags counts in several cells.
        scale = total if total else sum(int(matrix[a][b]) for a in range(len(labels)))
        cells = []
        for a, extra_name in enumerate(labels):
            count = int(matrix[a][b])
            share = count / scale if scale else 0.0
            cells.append({"extra": extra_name, "count": count, "share": share, "diagonal": a == b,
                          "level": heat_level(count, share, False)})
            if a != b and count > 0:
                pairs.append({"missed": name, "extra": extra_name, "count": count, "share": share})
        rows.append({"missed": name, "total": total, "cells": cells})
    pairs.sort(key=lambda p: (-p["count"], -p["share"], p["missed"], p["extra"]))
    extras = [{"extra": name, "count": int(extra[a]) if extra is not None else None} for a, name in enumerate(labels)]
    return {"swaps": True, "labels": list(labels), "rows": rows, "extras": extras, "pairs": pairs[:top]}
