from collections import Counter

import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.datasets.demo import demo_records, issue_records
from app.models import Dataset, Job, Sample, User


def test_demo_records_have_the_documented_splits_and_flips():
    records = demo_records()
    assert Counter(r.split for r in records) == {"train": 1000, "valid": 300, "test": 197, "unlabelled": 300}
    flipped = [r for r in records if r.flipped]
    assert len(flipped) == 100 and all(r.split == "train" for r in flipped)
    assert all(r.label is None for r in records if r.split == "unlabelled")
    assert all(r.png.startswith(b"\x89PNG") for r in records)
    assert [r.external_id for r in demo_records()] == [r.external_id for r in records]


def test_the_demo_plants_one_of_each_data_issue():
    records = demo_records()
    by_png = {}
    for r in records:
        by_png.setdefault(r.png, []).append(r)
    issues = issue_records(records)
    assert [r.external_id for r in issue_records(records)] == [r.external_id for r in issues]
    kinds = {r.external_id.split("-")[1]: r for r in issues}
    copy_test, copy_train = [r for r in issues if r.external_id.startswith("issue-copy")]
    assert copy_test.split == "test" and by_png[copy_test.png][0].split == "train"
    assert copy_train.split == "train" and by_png[copy_train.png][0].label == copy_train.label
    twin = kinds["twin"]
    assert twin.label != by_png[twin.png][0].label, "the twin carries another label"
    near = [r for r in issues if r.external_id.startswith("issue-near")]
    assert {r.split for r in near} == {"valid", "train"} and all(r.png not in by_png for r in near)
    assert {r.external_id for r in issues if r.issue.startswith("outlier")} == {"issue-noise", "issue-blank",
                                                                               "issue-pattern"}


def test_curate_init_migrates_creates_admin_and_loads_demo_once(monkeypatch, tmp_path, database_url, engine, db):
    from app.cli import cli
    from app.config import get_settings

    monkeypatch.setenv("CURATE_DATABASE_URL", database_url)
    monkeypatch.setenv("CURATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CURATE_ADMIN_PASSWORD", "admin-password-1")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(cli, ["init"])
        assert first.exit_code == 0, first.output
        assert "digits-demo" in first.output
        # The admin account comes last, framed, after the demo's lines.
        assert first.output.index("digits-demo") < first.output.index("Curate: the admin account")
        assert "Sign in as admin with the password from CURATE_ADMIN_PASSWORD" in first.output
        assert first.output.rstrip().endswith("╯")
        second = runner.invoke(cli, ["init"])
        assert second.exit_code == 0, second.output
        assert "admin account" not in second.output, "only when it is created"
    finally:
        get_settings.cache_clear()
    assert db.scalar(select(func.count()).select_from(User).where(User.role == "admin")) == 1
    assert db.scalar(select(func.count()).select_from(Dataset)) == 1
    assert db.scalar(select(func.count()).select_from(Sample)) == 1797 + 8
    # The planted exact copies group at once, without any run: the leak into test and the twin.
    from app.datasets.duplicates import duplicate_groups

    ds = db.scalars(select(Dataset)).one()
    leaks = duplicate_groups(db, ds, scope="leak").groups
    conflicts = duplicate_groups(db, ds, scope="conflict").groups
    assert any(e.startswith("issue-copy") for g in leaks for e in g.external_ids)
    assert any(e.startswith("issue-twin") for g in conflicts for e in g.external_ids)
    (job,) = db.scalars(select(Job)).all()
    assert (job.kind, job.status) == ("train", "queued")
    blobs = list((tmp_path / "blobs").rglob("*"))
    assert sum(p.is_file() for p in blobs) > 1000


def test_compose_file_has_postgres_web_and_gpu_worker_on_one_volume():
    with open("docker-compose.yml") as fh:
        compose = yaml.safe_load(fh)
    services = compose["services"]
    assert {"postgres", "web", "worker"} <= set(services)
    assert "healthcheck" in services["postgres"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    data_mounts = {s: [v for v in services[s]["volumes"] if v.endswith(":/data")] for s in ("web", "worker", "worker-cpu")}
    assert data_mounts["web"] == data_mounts["worker"] == data_mounts["worker-cpu"] != []
    # The GPU worker and a CPU-only one, each behind its profile; the same command and settings.
    assert (services["worker"]["profiles"], services["worker-cpu"]["profiles"]) == (["gpu"], ["cpu"])
    assert "deploy" not in services["worker-cpu"]
    assert services["worker-cpu"]["command"] == services["worker"]["command"]
    assert services["worker-cpu"]["environment"] == services["worker"]["environment"]


def test_the_cpu_worker_image_is_built_with_torch_without_cuda():
    with open("docker-compose.yml") as fh:
        services = yaml.safe_load(fh)["services"]
    cpu, gpu = services["worker-cpu"], services["worker"]
    assert cpu["build"]["args"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert cpu["image"] != gpu["image"] and "build" not in gpu  # the GPU worker runs the default (CUDA) build
    with open("Dockerfile") as fh:
        dockerfile = fh.read()
    assert "ARG TORCH_INDEX=" in dockerfile and '--index-url "$TORCH_INDEX"' in dockerfile
