"""The scale bench's Markdown: one section per part, each figure beside its target and the
baseline measured in the same run."""

from __future__ import annotations

from collections import defaultdict

from common import markdown_table
from scale_env import pct

LISTING_P99_MS, QUEUE_P99_MS, PAGE_P99_MS = 30.0, 50.0, 500.0
IMPORT_RATIO, EXPORT_RATIO, WORKER_MIB = 3.0, 2.0, 4096.0
# The job's predictions write against the plainest write of the same rows into predictions.
WRITE_RATIO = 1.5


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def ms(seconds: list[float], q: float) -> str:
    return f"{pct(seconds, q):.1f}" if seconds else ""


def build_section(n_rows: int, imp: dict, floors, export: dict | None) -> str:
    """imp/export: {"seconds", "peak_mib", "before_mib"}; floors: scale_build.Floors."""
    rows = []
    ratio_in = imp["seconds"] / floors.copy_in
    rows.append(["import (POST .../imports, CSV)", f"{imp['seconds']:.2f}", f"{n_rows / imp['seconds']:,.0f}",
                 f"{imp['before_mib']:.0f} / {imp['peak_mib']:.0f}", f"{floors.how} into a plain table: {floors.copy_in:.2f} s",
                 f"{ratio_in:.2f}x", f"<= {IMPORT_RATIO:g}x", met(ratio_in <= IMPORT_RATIO)])
    if floors.copy_samples is not None:
        rows.append(["COPY of the importer's rows into samples (rolled back)", f"{floors.copy_samples:.2f}",
                     f"{n_rows / floors.copy_samples:,.0f}", f"(own process {floors.peak_mib.get('copy-samples', 0):.0f})",
                     f"COPY into a plain table: {floors.copy_in:.2f} s", f"{floors.copy_samples / floors.copy_in:.2f}x; "
                     f"import is {imp['seconds'] / floors.copy_samples:.2f}x this", "", ""])
    if floors.copy_bare is not None:
        rows.append(["COPY of the same rows into a table like samples without its indexes (rolled back)",
                     f"{floors.copy_bare:.2f}", f"{n_rows / floors.copy_bare:,.0f}", "",
                     f"COPY into a plain table: {floors.copy_in:.2f} s", f"{floors.copy_bare / floors.copy_in:.2f}x; "
                     f"the indexes make COPY into samples {floors.copy_samples / floors.copy_bare:.2f}x this", "", ""])
    if export is not None and floors.copy_out:
        ratio_out = export["seconds"] / floors.copy_out
        rows.append(["export (GET .../export?format=csv)", f"{export['seconds']:.2f}", f"{n_rows / export['seconds']:,.0f}",
                     f"{export['before_mib']:.0f} / {export['peak_mib']:.0f}",
                     f"{'COPY' if floors.how == 'COPY' else 'SELECT'} out of the plain table: {floors.copy_out:.2f} s",
                     f"{ratio_out:.2f}x", f"<= {EXPORT_RATIO:g}x", met(ratio_out <= EXPORT_RATIO)])
        if floors.copy_out_same:
            same = export["seconds"] / floors.copy_out_same
            rows.append(["export, against the same rows", f"{export['seconds']:.2f}", "", "",
                         f"COPY out of a plain table of the export's own rows and columns: {floors.copy_out_same:.2f} s",
                         f"{same:.2f}x", f"<= {EXPORT_RATIO:g}x", met(same <= EXPORT_RATIO)])
    header = ["step", "seconds", "rows/s", "server RSS before / peak MiB", "baseline (same run)", "ratio", "target", "met"]
    return "## Build\n\n" + markdown_table(header, rows)


def train_section(results: list) -> str:
    rows = []
    for k, r in enumerate(results, 1):
        t = r.timings
        write = f"{t['writing']:.2f}" if "writing" in t else "not in the run's info"
        floor = r.floor
        if floor is not None and "writing" in t:
            ratio = t["writing"] / floor[0]
            write += (f" ({ratio:.2f}x the {floor[1]:,} rows' {'COPY' if floor[2] else 'executemany'} into predictions,"
                      f" {floor[0]:.2f} s; target <= {WRITE_RATIO:g}x: {met(ratio <= WRITE_RATIO)})")
        rows.append([str(k), str(r.job_id), r.status + (f": {r.error[:80]}" if r.error else ""), f"{r.wall_s:.1f}",
                     f"{r.job_s:.1f}" if r.job_s is not None else "", _t(t, "lr_find"), _t(t, "final"), _t(t, "scoring"),
                     write, f"{r.idle_mib:.0f}", f"{r.peak_mib:.0f}", f"< {WORKER_MIB / 1024:g} GiB",
                     met(r.peak_mib < WORKER_MIB)])
    header = ["run", "job", "status", "wall s (enqueue to done)", "job s", "lr_find s", "final fit s", "scoring s",
              "predictions write s", "worker RSS before MiB (baseline)", "worker peak RSS MiB", "target", "met"]
    return "## Train (worker, default tabular recipe, scoring in_sample, 2 epochs)\n\n" + markdown_table(header, rows)


def _t(timings: dict, key: str) -> str:
    return f"{timings[key]:.1f}" if key in timings else ""


def listings_section(items: list, health: list[float], sqlite: bool, with_plans: bool) -> str:
    from scale_listings import on_predictions, plan_root

    timed = [i for i in items if i.times]
    rows = []
    for i in items:
        row = [i.order, "yes" if i.reverse else "", i.filter, i.depth, str(i.limit),
               "" if i.rows is None else f"{i.rows:,}", str(len(i.times)) if i.times else "skipped (too few rows)"
               if i.depth != "first" and i.cursor is None else "", ms(i.times, 50), ms(i.times, 99),
               met(pct(i.times, 99) < LISTING_P99_MS) if i.times else "", ms(i.first, 100) if i.first else ""]
        if with_plans:
            row += [", ".join(i.seq_scans) or "none", "**yes**" if on_predictions(i.seq_scans) else "", plan_root(i, sqlite)]
        rows.append(row)
    header = ["order", "reverse", "filter", "depth", "limit", "rows", "n", "p50 ms", "p99 ms", "p99 < 30 ms",
              "warm-up calls, slowest ms"]
    if with_plans:
        header += ["full scans in the plan", "seq scan of predictions", "plan (top node)"]
    lines = [f"- baseline GET /api/v1/health: p50 {ms(health, 50)} ms, p99 {ms(health, 99)} ms ({len(health)} requests)"]
    if timed:
        slow = [i for i in timed if pct(i.times, 99) >= LISTING_P99_MS]
        lines.append(f"- {len(timed) - len(slow)} of {len(timed)} listings meet p99 < {LISTING_P99_MS:g} ms")
        worst = sorted(timed, key=lambda i: -pct(i.times, 99))[:10]
        lines.append("- slowest p99: " + "; ".join(f"{i.name} {pct(i.times, 99):.0f} ms" for i in worst))
        first = [t for i in timed for t in i.first]
        if first:
            lines.append(f"- warm-up calls (before the timed ones, not in p50/p99: the first call of a statement "
                         f"shape per server process builds it, the first per database connection plans it): "
                         f"{len(first)} calls, p50 {ms(first, 50)} ms, slowest {ms(first, 100)} ms")
    if with_plans:
        bad = [i for i in items if on_predictions(i.seq_scans)]
        lines.append(f"- plans with a sequential scan of predictions: {len(bad)} of {sum(1 for i in items if i.plans)}")
    title = "## Listings and their plans" if with_plans else "## Listings"
    return f"{title}\n\n" + "\n".join(lines) + "\n\n" + markdown_table(header, rows)


def offender_groups(offenders: list[tuple[str, str, str]]) -> list[tuple[list[str], str]]:
    """(listing names, the first one's SQL and plan) per plan shape; offenders are
    (listing name, plan shape, SQL and plan)."""
    groups: dict[str, list] = defaultdict(list)
    text: dict[str, str] = {}
    for name, shape, plan in offenders:
        groups[shape].append(name)
        text.setdefault(shape, plan)
    return [(names, text[shape]) for shape, names in groups.items()]


def summarize(names: list[str]) -> str:
    """Listing names ("order[ reverse] · filter · depth · limit n") folded per filter."""
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for name in names:
        order, filt, depth, _ = name.split(" · ")
        o, _, rev = order.partition(" ")
        for key, value in (("orders", o), ("directions", "reverse" if rev else "default"), ("depths", depth)):
            if value not in per[filt][key]:
                per[filt][key].append(value)
    return "\n".join(f"- {filt}: {', '.join(v['orders'])} ({', '.join(v['directions'])}; {', '.join(v['depths'])})"
                     for filt, v in per.items())


def offenders_section(groups: list[tuple[list[str], str]]) -> str:
    if not groups:
        return "## Plans that scan predictions\n\nnone"
    parts = [f"## Plans that scan predictions ({sum(len(n) for n, _ in groups)} listings, {len(groups)} plan shapes)"]
    for names, plan in groups:
        parts.append(f"{len(names)} listing(s) of one plan shape:\n\n{summarize(names)}\n\nthe first of them:\n\n```\n{plan}\n```")
    return "\n\n".join(parts)


def pages_section(items: list, health: list[float]) -> str:
    rows = [[p.name, f"`{p.url}`", str(len(p.times)), ms(p.times, 50), ms(p.times, 99),
             met(pct(p.times, 99) < PAGE_P99_MS)] for p in items]
    note = (f"Client-side time on the same machine (request sent to body read), so the server's time plus a "
            f"loopback round trip: the health check's p99 was {ms(health, 99)} ms in this run.")
    return "## Pages (signed-in browser client)\n\n" + note + "\n\n" + markdown_table(
        ["page", "URL", "n", "p50 ms", "p99 ms", "p99 < 500 ms"], rows)


def load_section(load, n_annotators: int, seconds: float) -> str:
    ph = load.phase
    fetch, patch = ph.latency.get("fetch", []), ph.latency.get("patch", [])
    rows = [
        ["queue next-sample fetch (order=loss, reviewed=false, split=train, label=C, limit=5)", str(len(fetch)),
         ms(fetch, 50), ms(fetch, 99), "< 50 ms", met(pct(fetch, 99) < QUEUE_P99_MS) if fetch else ""],
        ["PATCH a label (If-Match)", str(len(patch)), ms(patch, 50), ms(patch, 99), "", ""],
        ["listings, first page (prober)", str(len(load.listing)), ms(load.listing, 50), ms(load.listing, 99), "< 30 ms",
         met(pct(load.listing, 99) < LISTING_P99_MS) if load.listing else ""],
        ["GET /api/v1/health (prober; baseline)", str(len(load.health)), ms(load.health, 50), ms(load.health, 99), "", ""],
    ]
    statuses = {a: dict(s) for a, s in ph.statuses.items()}
    notes = [f"{n_annotators} annotators at human pace (2-6 s a sample) for {seconds:g} s, bench/annotators.py's loop; "
             f"a prober alternates a listing and the health check with 0.2 s pauses beside them.",
             f"statuses: {statuses}; errors: {len(load.errors)}" + (f" (first: {load.errors[0]})" if load.errors else "")]
    return "## Under load\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + markdown_table(
        ["measure", "n", "p50 ms", "p99 ms", "target", "met"], rows)


def growth_section(points: list[dict]) -> str:
    if not points:
        return ""
    first = points[0]

    def ratio(p: dict, key: str) -> str:
        return f"{p[key] / first[key]:.2f}x" if first.get(key) and p.get(key) == p.get(key) else ""

    rows = []
    for p in points:
        rows.append([f"{p['n']:,}", f"{p['import_s']:.1f}", f"{p['train_s']:.1f}", f"{p['queue_p99']:.1f}",
                     f"{p['listing_p99']:.1f}", p["listing_worst"], f"{p['page_p99']:.1f}",
                     " / ".join(ratio(p, k) for k in ("queue_p99", "listing_p99", "page_p99", "train_s"))])
    header = ["N (train)", "import s", "train job s", "queue fetch p99 ms", "worst listing p99 ms", "worst listing",
              "dataset page p99 ms", f"ratio to N={first['n']:,}: queue / listing / page / train"]
    return "## Growth\n\n" + markdown_table(header, rows)
