"""Helpers for the import and export tests: files in memory, uploads, reading samples back."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Dataset, Sample


def upload(client, ds_id: int, name: str, data: bytes, headers: dict, **params):
    """POST a file to the import route."""
    return client.post(f"/api/v1/datasets/{ds_id}/imports", params=params, files={"file": (name, data)}, headers=headers)


def csv_bytes(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(table: dict) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(table), sink)
    return sink.getvalue()


def png(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def samples(db: Session, ds_id: int) -> list[Sample]:
    """The dataset's samples in id order, fresh from the database."""
    db.expire_all()
    return list(db.scalars(select(Sample).where(Sample.dataset_id == ds_id).order_by(Sample.id)))


def dataset(db: Session, ds_id: int) -> Dataset:
    db.expire_all()
    return db.get(Dataset, ds_id)


def error_at(body: dict, row, field: str) -> str:
    """The message of the error on (row, field); fails the test when there is none."""
    for e in body["errors"]:
        if e["row"] == row and e["field"] == field:
            return e["message"]
    raise AssertionError(f"no error on row {row!r}, field {field!r}: {body['errors']}")
