"""Request bodies over the limit get 413, with or without a Content-Length header."""

import asyncio

import httpx

from app.config import Settings


def _small_app(settings: Settings):
    from app.main import create_app

    return create_app(settings.model_copy(update={"max_upload_bytes": 1000}))


def test_chunked_body_over_the_limit_gets_413_not_400(settings, engine, engineer, db):
    from fastapi.testclient import TestClient

    from tests.builders import make_dataset

    ds = make_dataset(db)
    app = _small_app(settings)

    def chunks():
        for _ in range(20):
            yield b"x" * 200

    with TestClient(app) as client:
        r = client.post(
            f"/api/v1/datasets/{ds.id}/imports",
            content=chunks(),
            headers={**engineer.headers, "Content-Type": "multipart/form-data; boundary=zzz"},
        )
    assert r.status_code == 413, r.text
    assert "CURATE_MAX_UPLOAD_BYTES" in r.json()["detail"]


def test_declared_length_over_the_limit_is_refused_before_reading(settings, engine):
    app = _small_app(settings)
    transport = httpx.ASGITransport(app=app)

    async def go():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/api/v1/datasets/1/imports", content=b"y" * 5000)

    r = asyncio.run(go())
    assert r.status_code == 413
