"""Near copies of train images in valid and test, found in the pixels: shifted, cropped and
noisy copies are matched to their source, distinct pictures are not, and the pairs join the
run's duplicate groups so the leakage report names them (both databases)."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
from PIL import Image

from app.datasets.storage import BlobStore
from app.runs.data_issues import run_issues
from app.scoring import image_copies
from tests.builders import add_samples, make_dataset, make_user

SIZE = 48


def picture(rng: np.random.Generator) -> np.ndarray:
    """A random grayscale picture: a few soft blobs and strokes on a dark ground."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.zeros((SIZE, SIZE))
    for _ in range(rng.integers(3, 6)):
        cy, cx = rng.uniform(6, SIZE - 6, 2)
        sy, sx = rng.uniform(2, 7, 2)
        img += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))
    return np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)


def shifted(img: np.ndarray) -> np.ndarray:
    out = np.zeros_like(img)
    out[:, 3:] = img[:, :-3]
    return out


def cropped(img: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(img[2:-4, 3:-3]).resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def noisy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)


def pictures(seed: int = 0) -> tuple[list[np.ndarray], list[str], dict[int, int]]:
    """40 train pictures, then test: a shifted copy of 3, a crop of 5, a noisy copy of 7 and
    12 new pictures; the expected {test row: train row}."""
    rng = np.random.default_rng(seed)
    imgs = [picture(rng) for _ in range(40)]
    split = ["train"] * 40
    imgs += [shifted(imgs[3]), cropped(imgs[5]), noisy(imgs[7], rng)]
    imgs += [picture(rng) for _ in range(12)]
    split += ["test"] * 15
    return imgs, split, {40: 3, 41: 5, 42: 7}


def save(imgs: list[np.ndarray], folder: Path) -> list[str]:
    paths = []
    for i, img in enumerate(imgs):
        path = folder / f"{i}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


def test_copies_are_matched_to_their_source_and_distinct_pictures_are_not(tmp_path):
    imgs, split, expected = pictures()
    thumbs = image_copies.thumbnails(save(imgs, tmp_path))
    held, source, ratio, info = image_copies.held_out_copies(thumbs, np.array(split))
    assert dict(zip(held.tolist(), source.tolist())) == expected
    assert (ratio <= image_copies.RATIO).all()
    assert info["pairs"] == 3 and info["transforms"] == len(image_copies.transforms())


def test_no_train_or_no_held_out_images_gives_no_pairs(tmp_path):
    imgs, split, _ = pictures()
    thumbs = image_copies.thumbnails(save(imgs, tmp_path))
    assert len(image_copies.held_out_copies(thumbs, np.array(["train"] * len(imgs)))[0]) == 0
    assert len(image_copies.held_out_copies(thumbs, np.array(["test"] * len(imgs)))[0]) == 0


def test_an_unreadable_image_is_blank_not_an_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    thumbs = image_copies.thumbnails([str(bad), str(tmp_path / "missing.png")])
    assert thumbs.shape == (2, image_copies.THUMB, image_copies.THUMB) and not thumbs.any()


def test_the_inverted_file_index_finds_them_too(tmp_path, monkeypatch):
    from app.scoring import neighbours

    monkeypatch.setattr(neighbours, "EXACT_MAX", 10)  # 40 train thumbnails: the IVF path
    imgs, split, expected = pictures()
    held, source, _, _ = image_copies.held_out_copies(image_copies.thumbnails(save(imgs, tmp_path)), np.array(split))
    assert dict(zip(held.tolist(), source.tolist())) == expected


@pytest.mark.parametrize("seed", [1, 2])
def test_other_pictures_too(tmp_path, seed):
    imgs, split, expected = pictures(seed)
    held, source, _, _ = image_copies.held_out_copies(image_copies.thumbnails(save(imgs, tmp_path)), np.array(split))
    assert dict(zip(held.tolist(), source.tolist())) == expected


def test_a_run_of_an_image_dataset_joins_pixel_copies_and_the_leak_report_names_them(client, db, settings):
    imgs, split, expected = pictures()
    store = BlobStore(settings.blob_dir)
    ds = make_dataset(db, task="image", classes=["a", "b"])
    labels = ["a" if i % 2 else "b" for i in range(len(imgs))]
    samples = add_samples(db, ds, [{"label": lab, "split": sp, "image_blob": store.put(_png(img)),
                                    "external_id": f"img{i}"}
                                   for i, (lab, sp, img) in enumerate(zip(labels, split, imgs))])
    eng = make_user(db, "engineer")
    # The model is right and its embeddings see no copy at all: the pairs come from the pixels.
    rng = np.random.default_rng(3)
    lines = [json.dumps({"external_id": s.external_id, "a": 0.9 if lab == "a" else 0.1, "b": 0.1 if lab == "a" else 0.9,
                         "embedding": rng.normal(size=8).tolist()}) for s, lab in zip(samples, labels)]
    r = client.post(f"/api/v1/datasets/{ds.id}/runs", files={"file": ("p.jsonl", "\n".join(lines).encode())},
                    data={"name": "own-model", "out_of_fold": "true"}, headers=eng.headers)
    assert r.status_code == 201, r.text
    issues = r.json()["info"]["data_issues"]
    assert issues["image_copies"]["pairs"] == 3 and issues["leak_groups"] == 3

    page = client.get(f"/api/v1/datasets/{ds.id}/duplicates", params={"kind": "near"}, headers=eng.headers).json()
    groups = {tuple(sorted(g["external_ids"])) for g in page["groups"]}
    assert groups == {tuple(sorted((f"img{a}", f"img{b}"))) for a, b in expected.items()}

    report = client.get(f"/api/v1/datasets/{ds.id}/leakage", headers=eng.headers).json()
    test = report["splits"]["test"]
    assert set(test["sample_ids"]) == {samples[i].id for i in expected}
    assert (test["leaked"], test["leaked_near"], test["leaked_exact"]) == (3, 3, 0)


def test_a_text_dataset_is_not_searched_for_pixel_copies(db, engine, settings):
    ds = make_dataset(db, task="text", classes=["a", "b"])
    samples = add_samples(db, ds, [{"label": "a", "split": "train" if i < 6 else "test"} for i in range(8)])
    issues = run_issues(engine, settings.data_dir, 0, ds.id, np.array([s.id for s in samples]),
                        np.array([s.split for s in samples]).astype(str), np.zeros(8, dtype=int),
                        X=np.random.default_rng(0).normal(size=(8, 4)))
    assert "image_copies" not in issues.info


def _png(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()
