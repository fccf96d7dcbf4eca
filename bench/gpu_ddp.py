"""Section (e) of bench/gpu.py: a one-rank data-parallel train job against the same job without a group.

Both are real train jobs (`run_job(ctx, "train")`, app/training/jobs.py) on the image demo in
a temporary SQLite database. The one-rank job goes through the code a `devices: N` job takes:
`ddp.process_group` (what `ddp.job_group` forms for N > 1) with a world of 1, NCCL on CUDA and
gloo on the CPU; every fit under DistributedDataParallel with the train loader a ShardedDL; rank
0 predicts and scores. What it reports: the backend and world size the group had, how many fits
ran wrapped, wall seconds, the final fit's train samples/s, valid accuracy, and how many
predictions each sample got (exactly one each, counted in the database).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import markdown_table

SECRET = "gpu-bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def _database(tmp: Path, data):
    """A migrated SQLite database holding `data`'s items (bench/gpu.py demo_data) as one image dataset."""
    from sqlalchemy.orm import Session

    from app.config import Settings
    from app.datasets.storage import BlobStore
    from app.db import get_engine
    from app.migrate import upgrade
    from app.models import Dataset, Sample

    url = f"sqlite:///{tmp / 'curate.db'}"
    upgrade(url)
    settings = Settings(database_url=url, data_dir=tmp / "data", secret_key=SECRET, _env_file=None)
    engine = get_engine(url)
    store = BlobStore(settings.blob_dir)
    with Session(engine, expire_on_commit=False) as db:
        ds = Dataset(name="digits-demo", task="image", classes=data.classes, settings={}, label_version=1)
        db.add(ds)
        db.flush()
        db.add_all(Sample(dataset_id=ds.id, external_id=f"d{i}", split=row.split, image_blob=store.put(Path(row.path).read_bytes()),
                          image_path=f"{i}.png", label=row.label, original_label=row.label)
                   for i, row in enumerate(data.items.itertuples()))
        db.commit()
        return engine, settings, ds.id


@contextmanager
def _observed(seen: dict, one_rank: bool):
    """During one job: with `one_rank`, a one-device job forms a group of one (ddp.process_group),
    and the backend and world size it had are kept; in every fit, whether the model was a
    DistributedDataParallel and the train loader a ShardedDL."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from app.training import ddp

    job_group, before_fit = ddp.job_group, ddp.DDPCallback.before_fit

    @contextmanager
    def group_of_one(devices, data, settings):
        with ddp.process_group(1, data, settings) as group:
            seen.update(backend=dist.get_backend(), world=dist.get_world_size(), rank=group.rank)
            yield group

    def observe(cb) -> None:
        before_fit(cb)
        learn = cb.learn
        wrapped = isinstance(learn.model, DistributedDataParallel) and isinstance(learn.dls.train, ddp.ShardedDL)
        seen["ddp_fits"] = seen.get("ddp_fits", 0) + int(wrapped)

    if one_rank:
        ddp.job_group = group_of_one
    ddp.DDPCallback.before_fit = observe
    try:
        yield
    finally:
        ddp.job_group, ddp.DDPCallback.before_fit = job_group, before_fit


def _job(engine, settings, dataset_id: int, params: dict, one_rank: bool, sync) -> dict:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from app.jobs.context import LocalJobContext
    from app.jobs.registry import run_job
    from app.models import Prediction, Run, Sample

    seen: dict = {"backend": "none", "world": 1, "ddp_fits": 0}
    ctx = LocalJobContext(engine=engine, settings=settings, params=params, dataset_id=dataset_id)
    with _observed(seen, one_rank):
        sync()
        t = time.perf_counter()
        result = run_job(ctx, "train")
        sync()
        wall = time.perf_counter() - t
    with Session(engine) as db:
        run = db.get(Run, result["run_id"])
        counts = dict(db.execute(select(Prediction.sample_id, func.count()).where(Prediction.run_id == run.id)
                                 .group_by(Prediction.sample_id)).all())
        splits = dict(db.execute(select(Sample.id, Sample.split).where(Sample.dataset_id == dataset_id)).all())
        train = [i for i, s in splits.items() if s == "train"]
        n_train, epochs = run.info["sizes"]["train"], run.params["epochs"]
        return {**seen, "status": run.status, "devices": run.params["devices"], "wall": wall,
                "samples_per_s": n_train * epochs / run.info["timings"]["final"],
                "valid_accuracy": run.metrics["valid"]["accuracy"], "n_valid": run.info["sizes"]["valid"],
                "train_once": sum(counts.get(i, 0) == 1 for i in train), "n_train": len(train),
                "all_once": set(counts) == set(splits) and all(c == 1 for c in counts.values())}


def section_ddp(data, sizes: dict, lr: float, workdir: str, sync) -> dict:
    """(e): the plain job, then the one-rank job, with the same recipe and seed."""
    from app.db import dispose_engines

    tmp = Path(workdir) / "ddp"
    tmp.mkdir()
    engine, settings, dataset_id = _database(tmp, data)
    params = {"epochs": sizes["epochs"], "lr": lr, "batch_size": sizes["batch_size"], "image_size": sizes["image_size"],
              "pretrained": False, "scoring": "in_sample", "seed": 0}
    try:
        plain = _job(engine, settings, dataset_id, params, False, sync)
        one = _job(engine, settings, dataset_id, params, True, sync)
    finally:
        dispose_engines()
    plain["job"], one["job"] = "1 process, no group", "1-rank DDP"
    # Two standard errors of an accuracy over the valid split (at least one sample's worth).
    p, n = (plain["valid_accuracy"] + one["valid_accuracy"]) / 2, max(plain["n_valid"], 1)
    noise = max(2 * math.sqrt(p * (1 - p) / n), 1 / n)
    diff = abs(one["valid_accuracy"] - plain["valid_accuracy"])
    out = {"rows": [plain, one], "diff": diff, "noise": noise, "within_noise": diff <= noise}
    for r in out["rows"]:
        print(f"(e) {r['job']}: backend {r['backend']}, world {r['world']}, {r['ddp_fits']} fit(s) under DDP, "
              f"wall {r['wall']:.1f}s, {r['samples_per_s']:.0f} train samples/s, valid accuracy {r['valid_accuracy']:.3f}, "
              f"train samples scored once: {_yes(r['train_once'] == r['n_train'] > 0)} ({r['train_once']} of {r['n_train']})",
              flush=True)
    print(f"(e) valid accuracy difference {diff:.3f}, noise {noise:.3f}: {'within' if out['within_noise'] else 'OUTSIDE'} noise; "
          f"every sample predicted exactly once in both jobs: {_yes(plain['all_once'] and one['all_once'])}", flush=True)
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def report_lines(d: dict) -> list[str]:
    rows = [[r["job"], r["backend"], r["world"], r["ddp_fits"], f"{r['wall']:.1f}", f"{r['samples_per_s']:.0f}",
             f"{r['valid_accuracy']:.3f}", f"{_yes(r['train_once'] == r['n_train'] > 0)} ({r['train_once']} of {r['n_train']})"]
            for r in d["rows"]]
    plain, one = d["rows"]
    return [
        "The same train job (`run_job(ctx, \"train\")`, in-sample scoring, same seed) twice: in one process "
        "without a group, and as a one-rank data-parallel job through the code a `devices: N` job takes "
        "(`ddp.process_group` with a world of 1: DistributedDataParallel, ShardedDL, rank 0 predicts). "
        "Train samples/s is the final fit's; \"scored once\" counts each train sample's predictions in the database.",
        "",
        markdown_table(["job", "backend", "world", "fits under DDP", "wall s", "train samples/s", "valid accuracy",
                        "train samples scored once"], rows),
        "",
        f"Valid accuracy {one['valid_accuracy']:.3f} with the group against {plain['valid_accuracy']:.3f} without: "
        f"difference {d['diff']:.3f}, noise (two standard errors over {plain['n_valid']} valid samples) {d['noise']:.3f}: "
        f"{'within' if d['within_noise'] else 'OUTSIDE'} noise. Every sample predicted exactly once in both jobs: "
        f"{_yes(plain['all_once'] and one['all_once'])}.",
    ]
