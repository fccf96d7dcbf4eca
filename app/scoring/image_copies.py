"""Near copies of train images in valid and test, found in the pixels (docs/data-issues.md).

A model's embedding is built to tell classes apart, not to recognise one picture: a copy of a
train image shifted by a pixel, cropped a little and resized, or with noise on it can sit
farther from its source in the embedding than two different pictures of the same class
(bench/results/data_issues.md measured 1.4-3.3 times the median nearest-neighbour distance
on 8x8 digits). For leakage, where every copy of a train sample in valid or test inflates the
metrics, Curate also compares the images themselves:

- each image becomes a THUMB x THUMB grayscale thumbnail, lightly blurred (BLUR pixels);
- every valid and test thumbnail is compared with every train thumbnail under TRANSFORMS
  small geometric changes (shifts of up to SHIFT pixels, a crop of CROP pixels resized back,
  and the reverse: shrunk by CROP pixels and placed at a corner or the centre), on the
  central window (MARGIN pixels off each side, where the shifts and crops agree), by the
  cosine distance of the window's mean-centred pixels; faiss finds the NEIGHBOURS nearest
  train thumbnails of each transformed query;
- a held-out image is a copy of its nearest train image when that one is distinctly nearer
  than any other: its distance is at most RATIO times the distance to the second nearest
  train image (Lowe's ratio test). The rule calibrates itself per image: two different
  pictures of the same class have many train images about as near, a copy has one.

The pairs join the run's duplicate groups (app.runs.data_issues), so the leakage report, the
duplicates view and the exports see them like the near duplicates of the embedding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.scoring.neighbours import build_index

THUMB = 16
BLUR = 1.0
SHIFT = 2
CROP = 2
MARGIN = 2
NEIGHBOURS = 3
RATIO = 0.3
BATCH = 4096


def thumbnail(path: str) -> np.ndarray:
    """The image at path as a blurred THUMB x THUMB grayscale array (float32, 0..1)."""
    from PIL import Image, ImageFilter

    with Image.open(path) as im:
        im.draft("L", (THUMB * 4, THUMB * 4))  # a JPEG decodes at a fraction of its size
        small = im.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.GaussianBlur(BLUR))
    return np.asarray(small, dtype=np.float32) / 255.0


def thumbnails(paths: Sequence[str]) -> np.ndarray:
    """(n, THUMB, THUMB) thumbnails; an unreadable image is all zeros."""
    out = np.zeros((len(paths), THUMB, THUMB), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            out[i] = thumbnail(path)
        except (OSError, ValueError):
            continue
    return out


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(a, dtype=np.float32)).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def transforms() -> list[tuple[str, Any]]:
    """(name, function of a (n, THUMB, THUMB) array): the changes a copy is looked for under."""
    out: list[tuple[str, Any]] = []
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            out.append((f"shift({dy},{dx})", lambda A, dy=dy, dx=dx: np.roll(A, (dy, dx), axis=(1, 2))))
    inner = THUMB - CROP
    corners = [(0, 0), (0, CROP), (CROP, 0), (CROP, CROP)]
    for oy, ox in corners:  # a crop of the query resized back
        out.append((f"crop({oy},{ox})", lambda A, oy=oy, ox=ox: np.stack(
            [_resize(np.ascontiguousarray(a[oy:oy + inner, ox:ox + inner]), THUMB) for a in A])))
    for oy, ox in corners + [(CROP // 2, CROP // 2)]:  # the query as a crop of its source

        def shrink(A: np.ndarray, oy: int = oy, ox: int = ox) -> np.ndarray:
            out = np.zeros_like(A)
            for i, a in enumerate(A):
                out[i, oy:oy + inner, ox:ox + inner] = _resize(a, inner)
            return out

        out.append((f"shrink({oy},{ox})", shrink))
    return out


def _window(A: np.ndarray) -> np.ndarray:
    """The central window of each thumbnail, mean-centred and of unit length."""
    W = A[:, MARGIN:THUMB - MARGIN, MARGIN:THUMB - MARGIN].reshape(len(A), -1).astype(np.float32)
    W = W - W.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(W, axis=1, keepdims=True)
    return np.ascontiguousarray(W / np.maximum(norm, 1e-6), dtype=np.float32)


def held_out_copies(thumbs: np.ndarray, split: np.ndarray, threads: int | None = None,
                    ratio: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(held-out rows, their train source rows, distance ratios, info): the valid and test
    thumbnails that are a near copy of a train thumbnail, rows indexing `thumbs`."""
    import faiss

    ratio = RATIO if ratio is None else ratio
    started = time.monotonic()
    split = np.asarray(split).astype(str)
    train = np.flatnonzero(split == "train")
    held = np.flatnonzero(np.isin(split, ["valid", "test"]))
    info: dict[str, Any] = {"thumb": THUMB, "transforms": 0, "ratio": ratio, "pairs": 0}
    empty = np.zeros(0, np.int64)
    if len(train) < 2 or len(held) == 0:
        return empty, empty, np.zeros(0), info
    if threads:
        faiss.omp_set_num_threads(threads)
    index, _ = build_index(_window(thumbs[train]), inner_product=True)
    k = min(NEIGHBOURS, len(train))
    found_a, found_b, found_r = [], [], []
    steps = transforms()
    info["transforms"] = len(steps)
    for start in range(0, len(held), BATCH):
        rows = held[start:start + BATCH]
        queries = thumbs[rows]
        sims = np.full((len(rows), len(steps) * k), -2.0, dtype=np.float32)
        ids = np.full((len(rows), len(steps) * k), -1, dtype=np.int64)
        for t, (_, f) in enumerate(steps):
            S, I = index.search(_window(f(queries)), k)
            sims[:, t * k:(t + 1) * k], ids[:, t * k:(t + 1) * k] = S, I
        for q in range(len(rows)):
            best: dict[int, float] = {}
            for s, j in zip(sims[q].tolist(), ids[q].tolist()):
                if j >= 0 and s > best.get(j, -3.0):
                    best[j] = s
            if len(best) < 2:
                continue
            (j1, s1), (_, s2) = sorted(best.items(), key=lambda kv: -kv[1])[:2]
            d1, d2 = max(0.0, 1.0 - s1), max(0.0, 1.0 - s2)
            if d1 <= ratio * d2 or (d1 < 1e-6 and d2 >= 1e-6):
                found_a.append(int(rows[q]))
                found_b.append(int(train[j1]))
                found_r.append(d1 / d2 if d2 > 0 else 0.0)
    info.update(pairs=len(found_a), seconds=round(time.monotonic() - started, 3))
    return (np.asarray(found_a, np.int64), np.asarray(found_b, np.int64), np.asarray(found_r, np.float64), info)
