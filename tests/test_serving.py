"""The server process's app: built like every other, with what is alive at start frozen."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from app.main import serving_app


def test_a_server_process_keeps_its_startup_objects_out_of_full_collections(settings, engine):
    before = gc.get_freeze_count()
    try:
        app = serving_app(settings)
        # The modules and the app itself: far more than a test's own objects.
        assert gc.get_freeze_count() - before > 50_000
        with TestClient(app) as client:
            assert client.get("/api/v1/health").status_code == 200
    finally:
        gc.unfreeze()
