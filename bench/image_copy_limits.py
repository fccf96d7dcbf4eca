"""How far the pixel comparison of app.scoring.image_copies can go on the digits of
bench/data_issues.py: how many natural test images a rule would also name as copies to name
more of the injected train->test near copies.

    .venv/bin/python bench/image_copy_limits.py          # about a minute; writes bench/results/image_copy_limits.md

The data are bench/data_issues.py's `digits-image` (seed 0): 90 injected train->test copies
(36 exact, 54 near: pixel noise, a 1-pixel shift, a 1-pixel crop resized back to 8x8) among
464 test images; the 374 test images that copy nothing are the natural ones. For every test
image the comparison of image_copies (its thumbnails, its 34 shifts and crops, its window and
cosine distance, the 10 nearest train thumbnails under each change) gives d1, d2, ... the
distances to its nearest distinct train images. A rule names a test image a copy of its
nearest train image when its score is at or below a threshold; the table gives, for each
rule, how many natural test images the lowest threshold that names n of the 90 copies also
names (a copy whose source is not its nearest train image cannot be named by any threshold).
The second rule ("aligned") first compares each test image with its 8 nearest train images
under a finer search: 10 scales from 0.8 to 1.25 and shifts of -2.5 to 2.5 pixels in steps of
0.5 (1,210 changes), keeping each pair's smallest distance.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import data_issues as B  # noqa: E402
from app.scoring import image_copies as IC  # noqa: E402
from app.scoring.neighbours import build_index  # noqa: E402

COUNTS = (74, 78, 80, 82, 84, 86, 88, 90)
OUT = Path(__file__).resolve().parent / "results" / "image_copy_limits.md"


def _aligned(img: np.ndarray) -> np.ndarray:
    from scipy.ndimage import affine_transform

    c = (IC.THUMB - 1) / 2
    shifts = np.arange(-2.5, 2.51, 0.5)
    out = []
    for s in (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25):
        for ty in shifts:
            for tx in shifts:
                off = c - (c + np.array([ty, tx])) / s
                out.append(affine_transform(img, np.array([1 / s, 1 / s]), offset=off, order=1, mode="nearest"))
    return IC._window(np.stack(out))


def main() -> None:
    started = time.monotonic()
    data = B.build("digits-image", 0)
    with tempfile.TemporaryDirectory() as tmp:
        thumbs = IC.thumbnails(B.image_files(data, Path(tmp)))
    train = np.flatnonzero(data.split == "train")
    held = np.flatnonzero(data.split == "test")
    train_w = IC._window(thumbs[train])
    index, _ = build_index(train_w, inner_product=True)
    k = 10
    sims, ids = [], []
    for _, f in IC.transforms():
        S, I = index.search(IC._window(f(thumbs[held])), k)
        sims.append(S)
        ids.append(I)
    sims, ids = np.concatenate(sims, 1), np.concatenate(ids, 1)
    source = {c: s for s, c, kind in data.pairs if kind.endswith("(train->test)")}
    rows = {"ratio d1/d2": ([], []), "ratio d1/d5": ([], []), "distance d1": ([], []), "aligned, ratio d1/d2": ([], [])}
    for q, r in enumerate(held):
        best: dict[int, float] = {}
        for s, j in zip(sims[q].tolist(), ids[q].tolist()):
            if j >= 0 and s > best.get(j, -3.0):
                best[j] = s
        items = sorted(best.items(), key=lambda kv: -kv[1])
        d = np.array([1 - s for _, s in items])
        cand = np.array([j for j, _ in items[:8]])
        aligned = 1 - (_aligned(thumbs[r]) @ train_w[cand].T).max(0)
        order = np.argsort(aligned)
        scores = {"ratio d1/d2": (d[0] / max(d[1], 1e-9), int(train[items[0][0]])),
                  "ratio d1/d5": (d[0] / max(d[4], 1e-9), int(train[items[0][0]])),
                  "distance d1": (d[0], int(train[items[0][0]])),
                  "aligned, ratio d1/d2": (aligned[order[0]] / max(aligned[order[1]], 1e-9), int(train[cand[order[0]]]))}
        for name, (score, top) in scores.items():
            copies, natural = rows[name]
            if int(r) in source:
                copies.append(score if top == source[int(r)] else np.inf)
            else:
                natural.append(score)
    lines = [
        "# How far the pixel comparison of held-out images can go on the digits",
        "",
        f"`.venv/bin/python bench/image_copy_limits.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{time.monotonic() - started:.0f} s. Data: bench/data_issues.py's `digits-image` (seed 0): "
        f"{len(source)} injected train->test copies, {len(held) - len(source)} natural test images. "
        "See the script's docstring for the rules.",
        "",
        f"Natural test images also named at the lowest threshold that names n of the {len(source)} copies "
        "('never': a copy whose source is not its nearest train image):",
        "",
        "| rule | " + " | ".join(f"n = {n}" for n in COUNTS) + " |",
        "| --- | " + " | ".join("---" for _ in COUNTS) + " |",
    ]
    for name, (copies, natural) in rows.items():
        copies_s, natural_a = np.sort(np.asarray(copies)), np.asarray(natural)
        cells = []
        for n in COUNTS:
            t = copies_s[n - 1]
            cells.append("never" if not np.isfinite(t) else str(int((natural_a <= t).sum())))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    copies, natural = (np.asarray(a) for a in rows["ratio d1/d2"])
    lines += ["", f"Measured here, the default rule (ratio d1/d2 <= {IC.RATIO}) names {int((copies <= IC.RATIO).sum())} "
              f"of the {len(source)} copies and {int((natural <= IC.RATIO).sum())} natural test images."]
    text = "\n".join(lines) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
