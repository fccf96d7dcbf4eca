"""A REST client generated from /openapi.json by openapi-python-client (pinned in the test
extra) drives every endpoint family against a live server: datasets, imports, samples, PATCH
with If-Match, jobs, runs, exports and snapshots. The schema and the server cannot drift
apart without this failing (docs/rest.md, API docs)."""

from __future__ import annotations

import csv
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import make_user
from tests.web.review_builders import confident, make_run

pytestmark = pytest.mark.slow

CSV = "id,label,split,x0,x1\n" + "".join(
    f"r{i},{'ab'[i % 2]},{'train' if i < 16 else 'valid'},{i / 10},{(i % 3) / 3}\n" for i in range(20)
)


# openapi-python-client reads a text/* answer as text, which cannot fill a File, and skips
# media types it does not know (Parquet, NDJSON): its content_type_overrides say to read
# them as bytes, as docs/rest.md tells client authors to do.
CONFIG = """post_hooks: []
content_type_overrides:
  text/csv: application/octet-stream
  application/x-ndjson: application/octet-stream
  application/vnd.apache.parquet: application/octet-stream
"""


@pytest.fixture
def generated(live_server, tmp_path):
    """The client package generated from the live server's schema, imported."""
    import httpx

    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(httpx.get(f"{live_server}/openapi.json").json()))
    # No formatter needed to import it; file answers read as bytes (docs/rest.md, API docs).
    (tmp_path / "config.yaml").write_text(CONFIG)
    tool = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run([str(tool), "generate", "--path", str(spec), "--meta", "none", "--output-path",
                           str(tmp_path / "curate_client"), "--config", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        for name in [m for m in sys.modules if m == "curate_client" or m.startswith("curate_client.")]:
            del sys.modules[name]
        yield importlib.import_module("curate_client")
    finally:
        sys.path.remove(str(tmp_path))


def api(name: str):
    return importlib.import_module(f"curate_client.api.{name}")


def test_a_generated_client_drives_every_endpoint_family(generated, live_server, db):
    from curate_client import AuthenticatedClient
    from curate_client.models import (BodyImportSamples, DatasetCreate, DatasetUpdate, ErrorBody, JobCreate,
                                      JobCreateParams, RunUpdate, SampleConflict, SampleUpdate, SnapshotCreate, Task)
    from curate_client.models.export_samples_format import ExportSamplesFormat
    from curate_client.types import File

    engineer = make_user(db, "engineer")
    client = AuthenticatedClient(base_url=live_server, token=engineer.token, raise_on_unexpected_status=True)

    # Datasets
    ds = api("datasets.create_dataset").sync(client=client, body=DatasetCreate(name="generated", task=Task.TABULAR,
                                                                                  classes=["a", "b"]))
    assert (ds.name, ds.classes) == ("generated", ["a", "b"])
    assert [d.id for d in api("datasets.list_datasets").sync(client=client)] == [ds.id]
    assert api("datasets.get_dataset").sync(ds.id, client=client).name == "generated"
    updated = api("datasets.update_dataset").sync(ds.id, client=client, body=DatasetUpdate(overlap=1))
    assert updated.settings.additional_properties.get("overlap", updated.settings.to_dict().get("overlap")) == 1

    # Imports (multipart), all or nothing: a bad file is a 422 with the error body
    imported = api("datasets.import_samples").sync(
        ds.id, client=client, body=BodyImportSamples(file=File(io.BytesIO(CSV.encode()), "rows.csv", "text/csv")))
    assert not isinstance(imported, ErrorBody), imported.to_dict()
    assert imported.imported == 20
    bad = api("datasets.import_samples").sync_detailed(
        ds.id, client=client, body=BodyImportSamples(file=File(io.BytesIO(b"id,label\nz,zebra\n"), "bad.csv", "text/csv")))
    assert bad.status_code == 422 and isinstance(bad.parsed, ErrorBody) and bad.parsed.errors

    # Samples, and PATCH with If-Match: the version seen, then a stale one (409 with the current sample)
    page = api("samples.list_samples").sync(ds.id, client=client, limit=5, order="id")
    assert len(page.items) == 5 and page.next_cursor
    first = api("samples.get_sample").sync(page.items[0].id, client=client)
    changed = api("samples.patch_sample").sync_detailed(first.id, client=client, body=SampleUpdate(label="b"),
                                                         if_match=str(first.version))
    assert changed.status_code == 200 and changed.parsed.label == "b" and changed.headers["etag"]
    stale = api("samples.patch_sample").sync_detailed(first.id, client=client, body=SampleUpdate(label="a"),
                                                       if_match=str(first.version))
    assert stale.status_code == 409 and isinstance(stale.parsed, SampleConflict)

    # Runs (one scored by a run, as a train job leaves it) and the queue
    from app.models import Dataset, Sample

    samples = db.query(Sample).filter(Sample.dataset_id == ds.id).order_by(Sample.id).all()
    run = make_run(db, db.get(Dataset, ds.id), {s.id: confident("a", ["a", "b"], 0.8) for s in samples})
    assert [r.id for r in api("runs.list_runs").sync(ds.id, client=client)] == [run.id]
    pinned = api("runs.update_run").sync(run.id, client=client, body=RunUpdate(pinned=True))
    assert pinned.id == run.id and api("runs.get_run").sync(run.id, client=client).pinned is True
    handed = api("queue.get_queue").sync(ds.id, client=client, limit=2, order="loss")
    assert len(handed.items) == 2 and handed.run_id == run.id

    # An external run from a file of probabilities (multipart with form fields), then pinned
    # as the reference so that the rest follows the first run; a bad file is a 422 by row.
    from curate_client.models import BodyCreateExternalRun

    preds = "external_id,a,b\n" + "".join(f"{s.external_id},0.3,0.7\n" for s in samples)
    external = api("runs.create_external_run").sync(ds.id, client=client, body=BodyCreateExternalRun(
        file=File(io.BytesIO(preds.encode()), "preds.csv", "text/csv"), name="elsewhere", out_of_fold=True))
    assert not isinstance(external, ErrorBody), external.to_dict()
    assert external.provenance.kind == "external" and external.provenance.name == "elsewhere"
    refused = api("runs.create_external_run").sync_detailed(ds.id, client=client, body=BodyCreateExternalRun(
        file=File(io.BytesIO(b"external_id,a,b\nnobody,0.5,0.5\n"), "p.csv", "text/csv"), name="x"))
    assert refused.status_code == 422 and refused.parsed.errors[0].row == 1
    assert api("runs.pin_reference").sync(run.id, client=client).reference is True
    assert api("queue.release_queue").sync_detailed(ds.id, client=client).status_code == 204

    # Jobs: queued, read, listed, cancelled (no worker runs here)
    job = api("jobs.enqueue_job").sync(ds.id, client=client,
                                       body=JobCreate(kind="train", params=JobCreateParams.from_dict({"epochs": 1})))
    assert job.kind == "train" and str(job.status) == "queued"
    assert api("jobs.get_job").sync(job.id, client=client).id == job.id
    assert [j.id for j in api("jobs.list_jobs").sync(ds.id, client=client)] == [job.id]
    assert str(api("jobs.cancel_job").sync(job.id, client=client).status) == "cancelled"

    # Exports: the real media types, read as files
    exported = api("datasets.export_samples").sync(ds.id, client=client, format_=ExportSamplesFormat.CSV)
    rows = list(csv.DictReader(io.StringIO(exported.payload.read().decode())))
    assert len(rows) == 20 and {r["label"] for r in rows} == {"a", "b"}
    lines = api("datasets.export_samples").sync(ds.id, client=client, format_=ExportSamplesFormat.JSONL)
    assert len(lines.payload.read().splitlines()) == 20
    parquet = api("datasets.export_samples").sync(ds.id, client=client, format_=ExportSamplesFormat.PARQUET)
    import pandas as pd

    assert len(pd.read_parquet(io.BytesIO(parquet.payload.read()))) == 20

    # Snapshots: a pinned version exports what it pinned, whatever changes after
    snap = api("datasets.create_snapshot").sync(ds.id, client=client, body=SnapshotCreate(name="v1"))
    assert snap.name == "v1"
    assert [s.id for s in api("datasets.list_snapshots").sync(ds.id, client=client)] == [snap.id]
    again = api("samples.get_sample").sync(first.id, client=client)
    api("samples.patch_sample").sync(first.id, client=client, body=SampleUpdate(label="a"), if_match=str(again.version))
    pinned_rows = list(csv.DictReader(io.StringIO(api("datasets.export_samples").sync(
        ds.id, client=client, format_=ExportSamplesFormat.CSV, snapshot=snap.id).payload.read().decode())))
    assert [r["label"] for r in pinned_rows if r["id"] == "r0"] == ["b"], "the snapshot's label, not today's"
