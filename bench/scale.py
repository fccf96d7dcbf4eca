"""Does a dataset of a million samples feel as fast as the demo? Build, train, list, plan,
page and load at scale against a real server, each figure beside its target and a baseline
measured in the same run. Writes bench/results/scale.md (--out to write elsewhere).

    .venv/bin/python bench/scale.py [--rows N] [--sqlite] [--quick] [--runs K] [--reps R]
        [--only build,train,listings,plans,pages,load,growth] [--growth 10000,100000,1000000]

Parts (all but growth by default):
- build: a tabular dataset of N train samples (default 1,000,000 on Postgres, 100,000 with
  --sqlite; plus N/20 valid and N/20 test; 10 classes from 30% down to 0.5%; 8 features;
  10% of the train labels flipped) imported through POST /api/v1/datasets/{id}/imports on
  uvicorn, against COPY into a plain table; the export (GET .../export?format=csv) against
  COPY out; the server's peak RSS (VmRSS of it and its children) during both.
- train: `python -m app.cli worker` runs K train jobs queued through the API (default tabular
  recipe, scoring in_sample, 2 epochs): wall time, the worker's peak RSS, the predictions
  write time from the run's info.
- listings: GET /api/v1/datasets/{id}/samples for every order, reverse and filter, at the
  first page and 90% deep (cursor built from the database), p50/p99 over R repetitions,
  against GET /api/v1/health.
- plans: EXPLAIN of every listing; a sequential scan of predictions is flagged (and is a
  failure, exit 1, with --quick).
- pages: the web pages a signed-in browser opens; load: 50 annotators at human pace;
  growth: the headline figures at several N.

--quick (N 50,000, 2 repetitions, the listings timed in one direction, a 10 s load phase, one
run, no growth) takes about 90 s here and writes its report under bench/work/scale; it exits 1
when any listing's plan scans predictions sequentially, printing those plans.

The listings are measured after ANALYZE of samples and predictions (what autovacuum does soon
after a big write; --no-analyze measures with whatever statistics the writes left), and the
report says what the planner knew. A query slower than --budget seconds in all stops after
three repetitions.

A fresh database (curate_scale, next to --postgres-url; a file under bench/work/scale with
--sqlite) is made for the run and dropped after it unless --keep; --reuse runs the chosen
parts on a database a --keep run left (no new import or training unless asked for).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import common
import scale_build as build
import scale_env as env
import scale_listings as lst
import scale_pages as pg
import scale_report as rep

RESULTS = BENCH / "results" / "scale.md"
PARTS = ("build", "train", "listings", "plans", "pages", "load", "growth")
DATASET = "scale"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres-url", default=os.environ.get("CURATE_TEST_POSTGRES_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--database", default="curate_scale")
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of Postgres (default N 100,000)")
    ap.add_argument("--rows", type=int, help="N, train samples (default 1,000,000; 100,000 with --sqlite; 50,000 --quick)")
    ap.add_argument("--quick", action="store_true", help="N 50,000, fewer repetitions, short load, no growth; CI")
    ap.add_argument("--only", default=",".join(p for p in PARTS if p != "growth"), help=f"parts: {','.join(PARTS)}")
    ap.add_argument("--runs", type=int, default=1, help="train jobs (the many-runs case)")
    ap.add_argument("--reps", type=int, help="repetitions per listing and page (default 20; 3 with --quick)")
    ap.add_argument("--budget", type=float, default=10.0, help="seconds a slow query may take in all before its repetitions stop (at least 3)")
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--load-seconds", type=float, help="length of the load phase (default 60; 10 with --quick)")
    ap.add_argument("--growth", default="10000,100000,1000000", help="the sizes of the growth part")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--no-analyze", dest="analyze", action="store_false",
                    help="measure the listings with whatever planner statistics the writes left (default: ANALYZE "
                         "samples and predictions first, as autovacuum does soon after a big write)")
    ap.add_argument("--keep", action="store_true", help="keep the database for a later --reuse")
    ap.add_argument("--reuse", action="store_true", help="use the kept database as it is")
    ap.add_argument("--out", type=Path, help="the report (default: the results file; with --quick, one under bench/work/scale)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.quick:
        args.parts = [p for p in args.parts if p != "growth"]
    args.out = args.out or (env.WORK / "quick.md" if args.quick else RESULTS)
    args.rows = args.rows or (50_000 if args.quick else 100_000 if args.sqlite else 1_000_000)
    args.reps = args.reps or (2 if args.quick else 20)
    args.load_seconds = args.load_seconds or (10.0 if args.quick else 60.0)
    if args.quick:
        args.runs, args.budget = 1, min(args.budget, 2.0)
    return args


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Stack:
    """The database, the server, the worker and an API client, for one dataset."""

    def __init__(self, args, n_rows: int, name: str, reuse: bool = False):
        self.args, self.n_rows, self.reuse = args, n_rows, reuse
        say(f"{'reusing' if reuse else 'creating'} database {name} ({'SQLite' if args.sqlite else 'Postgres'})")
        self.db = (env.existing_database if reuse else env.fresh_database)(args.postgres_url, name, args.sqlite)
        self.token = env.create_admin(self.db.url)
        self.port = common.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = env.start_server(self.db.url, self.port, args.workers)
        self.worker = None
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=600)
        self.ds_id = self._dataset_id() if reuse else None
        self.run_ids: list[int] = self._run_ids() if reuse else []
        self.job_id: int | None = None

    def _dataset_id(self) -> int:
        found = [d["id"] for d in self.http.get("/api/v1/datasets").json() if d["name"] == DATASET]
        if not found:
            raise SystemExit(f"--reuse: no dataset {DATASET!r} in {self.args.database}")
        return found[0]

    def _run_ids(self) -> list[int]:
        runs = self.http.get(f"/api/v1/datasets/{self.ds_id}/runs").json()
        return sorted(r["id"] for r in runs if r["status"] == "succeeded")

    def csv_path(self) -> Path:
        return env.WORK / f"scale-{self.n_rows}.csv"

    def generate(self) -> dict:
        say(f"generating {self.n_rows:,} train rows")
        info = env.generate_csv(self.csv_path(), self.n_rows)
        self.total_rows = info["rows"]
        say(f"  {info['rows']:,} rows, {info['flipped']:,} labels flipped, {info['mib']:.0f} MiB of CSV")
        return info

    def import_data(self) -> dict:
        self.ds_id = build.create_dataset(self.http, DATASET)
        before = env.tree_rss_mib(self.server.pid)
        say("importing through the API")
        seconds, peak, answer = build.import_csv(self.http, self.ds_id, self.csv_path(), self.server.pid)
        say(f"  imported {answer['imported']:,} in {seconds:.1f}s, server peak {peak:.0f} MiB")
        return {"seconds": seconds, "peak_mib": peak, "before_mib": before}

    def train(self) -> build.TrainResult:
        if self.worker is None:
            self.worker = env.start_worker(self.db.url)
            build.worker_idle_mib(self.worker.pid)
        say("training (worker)")
        result = build.train_once(self.http, self.ds_id, self.worker.pid)
        say(f"  job {result.job_id} {result.status} in {result.wall_s:.1f}s, worker peak {result.peak_mib:.0f} MiB")
        if result.status != "succeeded":
            raise RuntimeError(f"train job {result.job_id} {result.status}: {result.error}")
        seconds, rows = build.predictions_floor(self.db.url, result.run_id)
        result.floor = (seconds, rows, not self.db.sqlite)
        say(f"  its {rows:,} predictions written again by {'executemany' if self.db.sqlite else 'COPY'}: {seconds:.2f}s")
        self.run_ids.append(result.run_id)
        self.job_id = result.job_id
        return result

    def export(self) -> dict:
        before = env.tree_rss_mib(self.server.pid)
        say("exporting through the API")
        seconds, peak, size = build.export_csv(self.http, self.ds_id, env.WORK / "export.csv", self.server.pid)
        say(f"  {size / 2**20:.0f} MiB in {seconds:.1f}s, server peak {peak:.0f} MiB")
        return {"seconds": seconds, "peak_mib": peak, "before_mib": before}

    def session(self, readonly: bool = True):
        from app.db import get_engine, session_scope

        return session_scope(get_engine(self.db.url), readonly=readonly)

    def close(self, keep: bool) -> None:
        self.http.close()
        env.stop(self.worker)
        env.stop(self.server)
        if not keep:
            self.db.drop()
            for name in (self.csv_path().name, "export.csv", "copy-out.csv"):
                (env.WORK / name).unlink(missing_ok=True)


def health_times(stack: Stack, reps: int) -> list[float]:
    return env.repeat(lambda: env.get_ok(stack.http, "/api/v1/health"), max(reps, 50), 30.0)


def the_listings(stack: Stack, args, depths=("first", "90%"), reverses=(False, True), order_list=None) -> list:
    from app.models import Dataset

    with stack.session() as session:
        classes = lst.pick_classes(session, stack.ds_id, stack.run_ids[-1])
        items = lst.listings(lst.filters(**classes), order_list, reverses, depths)
        if "90%" in depths:
            say(f"computing {sum(i.depth != 'first' for i in items)} deep cursors from the database")
            lst.set_deep_cursors(session, session.get(Dataset, stack.ds_id), items, progress=say)
    return items


def part_listings(stack: Stack, args, sections: list[str]) -> list[tuple[str, str]]:
    """Listings and/or plans; returns the (listing, SQL and plan) of each predictions seq scan."""
    from app.models import Dataset

    stats = planner_statistics(stack, args)
    items = the_listings(stack, args)
    health = health_times(stack, args.reps)
    if "listings" in args.parts:
        timed = [i for i in items if not i.reverse] if args.quick else items
        say(f"timing {len(timed)} listings x {args.reps}")
        lst.time_listings(stack.http, stack.ds_id, timed, args.reps, args.budget,
                          warm=0 if args.quick else 2 * args.workers, progress=say)
    offenders = []
    if "plans" in args.parts:
        say("explaining every listing")
        with stack.session() as session:
            ds = session.get(Dataset, stack.ds_id)
            lst.explain_listings(session, ds, items, args.sqlite)
            offenders = [(i.name, lst.plan_shape(i, args.sqlite), lst.plan_text(session, ds, i, args.sqlite))
                         for i in items if lst.on_predictions(i.seq_scans)]
    section = rep.listings_section(items, health, args.sqlite, "plans" in args.parts)
    note = f"Planner statistics when the listings ran ({'after ANALYZE' if args.analyze else '--no-analyze'}): {stats}."
    if args.quick:
        note += " --quick times the listings in the default direction only, without a warm-up call; the plans cover all."
    sections.append(section.replace("\n\n", f"\n\n{note}\n\n", 1))
    if "plans" in args.parts:
        sections.append(rep.offenders_section(rep.offender_groups(offenders)))
    return offenders


def planner_statistics(stack: Stack, args) -> str:
    """ANALYZE first unless --no-analyze; what the planner knows then, for the report."""
    if args.analyze:
        with stack.session(readonly=False) as session:
            lst.analyze(session, args.sqlite)
    with stack.session() as session:
        stats = lst.table_stats(session, args.sqlite)
    say(f"planner statistics: {stats}")
    return stats


def part_pages(stack: Stack, args, sections: list[str]) -> None:
    say("timing the pages")
    items = pg.pages(stack.ds_id, stack.run_ids, stack.job_id or _latest_job(stack))
    client = pg.browser(stack.base)
    try:
        pg.time_pages(client, stack.http, items, max(3, args.reps // 2), args.budget * 3)
    finally:
        client.close()
    sections.append(rep.pages_section(items, health_times(stack, args.reps)))


def _latest_job(stack: Stack) -> int | None:
    jobs = stack.http.get(f"/api/v1/datasets/{stack.ds_id}/jobs", params={"limit": 1}).json()
    return jobs[0]["id"] if jobs else None


def part_load(stack: Stack, args, sections: list[str]) -> None:
    say(f"creating {args.annotators} annotators")
    tokens = env.create_annotators(stack.db.url, args.annotators)
    with stack.session() as session:
        classes = lst.pick_classes(session, stack.ds_id, stack.run_ids[-1])
    probes = [i.api_params() for i in lst.listings(lst.filters(**classes), ["id", "random", "loss", "priority"],
                                                    reverses=(False,), depths=("first",))]
    say(f"load: {args.annotators} annotators at human pace for {args.load_seconds:g}s")
    load = pg.run_load(stack.base, stack.ds_id, tokens, stack.token, probes, args.load_seconds)
    sections.append(rep.load_section(load, args.annotators, args.load_seconds))


def main_parts(args, sections: list[str]) -> list[tuple[str, str]]:
    """Everything but growth on one dataset; returns the plans that scan predictions."""
    parts = set(args.parts)
    stack = Stack(args, args.rows, args.database, reuse=args.reuse)
    offenders: list = []
    try:
        imp = None
        if not args.reuse or "build" in parts:
            if args.reuse:
                raise SystemExit("--reuse with build: the dataset exists already; leave build out")
            stack.generate()
            imp = stack.import_data()
        needs_run = parts & {"listings", "plans", "pages", "load"}
        if "train" in parts or (needs_run and not stack.run_ids):
            results = [stack.train() for _ in range(args.runs if "train" in parts else 1)]
            if "train" in parts:
                sections.append(rep.train_section(results))
        if "build" in parts:
            sections.insert(0, _build_section(stack, imp))
        if parts & {"listings", "plans"}:
            offenders = part_listings(stack, args, sections)
        if "pages" in parts:
            part_pages(stack, args, sections)
        if "load" in parts:
            part_load(stack, args, sections)
    finally:
        stack.close(keep=args.keep)
    return offenders


def _build_section(stack: Stack, imp: dict) -> str:
    say("baselines: COPY in" if not stack.args.sqlite else "baselines: plain INSERT")
    floors = build.import_floors(stack.db, stack.csv_path())
    export = stack.export()
    build.export_floor(stack.db, floors, env.WORK / "copy-out.csv", stack.ds_id)
    return rep.build_section(stack.total_rows, imp, floors, export)


def growth(args, sections: list[str]) -> None:
    points = []
    for n in [int(x) for x in args.growth.split(",") if x.strip()]:
        say(f"growth: N = {n:,}")
        stack = Stack(args, n, f"{args.database}_growth")
        try:
            stack.generate()
            imp = stack.import_data()
            trained = stack.train()
            points.append(growth_point(stack, args, n, imp["seconds"], trained.wall_s))
        finally:
            stack.close(keep=False)
    sections.append(rep.growth_section(points))


def growth_point(stack: Stack, args, n: int, import_s: float, train_s: float) -> dict:
    planner_statistics(stack, args)
    items = the_listings(stack, args, depths=("first",), reverses=(False,))
    lst.time_listings(stack.http, stack.ds_id, items, args.reps, args.budget, warm=2 * args.workers, progress=say)
    queue = next(i for i in items if i.filter.startswith("queue") and i.order == "priority")
    worst = max(items, key=lambda i: env.pct(i.times, 99))
    page = pg.Page("dataset", f"/datasets/{stack.ds_id}")
    client = pg.browser(stack.base)
    try:
        pg.time_pages(client, stack.http, [page], max(3, args.reps // 2), args.budget * 3)
    finally:
        client.close()
    return {"n": n, "import_s": import_s, "train_s": train_s, "queue_p99": env.pct(queue.times, 99),
            "listing_p99": env.pct(worst.times, 99), "listing_worst": worst.name, "page_p99": env.pct(page.times, 99)}


def header(args, started: float) -> str:
    command = " ".join([".venv/bin/python", "bench/scale.py", *sys.argv[1:]])
    db = "SQLite (WAL, a file under bench/work/scale)" if args.sqlite else "Postgres on the same machine"
    sizes = []
    if set(args.parts) - {"growth"}:
        sizes.append(f"N = {args.rows:,} train samples (+{args.rows // 20:,} valid, +{args.rows // 20:,} test)")
    if "growth" in args.parts:
        sizes.append(f"growth at N = {args.growth} (each + N/20 valid, + N/20 test)")
    sizes = "; ".join(sizes)
    return "\n".join([
        "# Scale: a dataset of a million samples against the demo's speed", "",
        f"`{command}`, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {common.commit()}, "
        f"{time.perf_counter() - started:.0f} s in all.", "",
        f"Machine: {common.machine()}; {db}; uvicorn with {args.workers} worker processes; "
        f"load average {os.getloadavg()[0]:.1f} at the end (the cores are shared: figures carry that noise).", "",
        f"{sizes}: 10 classes (30% down to 0.5%), 8 float features, 10% of the train labels flipped. Repetitions "
        f"per listing {args.reps} (fewer for a query slower than {args.budget:g} s in all; n says how many ran).",
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    env.WORK.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    offenders = []
    try:
        if set(args.parts) - {"growth"}:
            offenders = main_parts(args, sections)
        if "growth" in args.parts:
            growth(args, sections)
    except BaseException as exc:
        sections.append(f"## Stopped\n\nThe run stopped early: {type(exc).__name__}: {exc}")
        raise
    finally:
        common.write_report("\n\n".join([header(args, started), *sections]) + "\n", args.out)
    if args.quick and offenders:
        print(f"\nFAILED: {len(offenders)} listing plan(s) scan predictions sequentially:", file=sys.stderr)
        for names, plan in rep.offender_groups(offenders):
            print(f"\n{len(names)} listing(s) of one plan shape:\n{rep.summarize(names)}\nthe first of them:\n{plan}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
