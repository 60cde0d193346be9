#!/usr/bin/env python3
"""Markdown tables of a bench/webhooks.sh run: python3 bench/webhooks-report.py RESULTS_DIR.

The delay of a delivery is its arrival at the receiver (the receiver's clock, once the
body is read) minus its event's `timestamp` (sesame's clock when the flow that recorded
the event began, a few milliseconds before its transaction committed; millisecond
resolution); both clocks are this machine's. The receiver's files may be gzipped. A delivery belongs to the scenario during
whose run (load generator start to end) its event was recorded."""
import datetime
import gzip
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
m = json.loads((out / "machine.json").read_text())


def ns(ts):
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def ops(name, scenario):
    f = out / f"{name}-{scenario}.json"
    return json.loads(f.read_text()) if f.exists() else None


def deliveries(name, scenario):
    w = json.loads((out / f"{name}-{scenario}-window.json").read_text())
    f = out / f"{name}-received.jsonl"
    text = f.read_text() if f.exists() else gzip.decompress((out / f"{name}-received.jsonl.gz").read_bytes()).decode()
    got = [json.loads(line) for line in text.splitlines() if line]
    mine = [g for g in got if w["fromNs"] <= ns(g["timestamp"]) <= w["toNs"]]
    delays = [(g["arrivedNs"] - ns(g["timestamp"])) / 1e6 for g in mine]
    during = [g for g in mine if g["arrivedNs"] <= w["toNs"]]
    after = [g for g in mine if g["arrivedNs"] > w["toNs"]]
    load_s = (w["toNs"] - w["fromNs"]) / 1e9
    drain_s = (max(g["arrivedNs"] for g in after) - w["toNs"]) / 1e9 if after else 0.0
    ids = [g["id"] for g in mine]
    return {
        "window": w, "events": len(mine), "distinctIds": len(set(ids)),
        "perSecondDuringLoad": len(during) / load_s,
        "afterLoad": len(after), "drainSeconds": drain_s,
        "perSecondDraining": len(after) / drain_s if drain_s > 0 else None,
        "delayMs": {p: pct(delays, p) for p in (50, 90, 99)} | {"max": max(delays) if delays else None},
    }


print(f'## Webhooks: run of {m["date"]}, concurrency {m["concurrency"]}, {m["seconds"]} s per scenario')
print()
print(f'Commit {m["commit"]}; nproc {m["nproc"]}; load average {m["loadavg_before"]} before, '
      f'{(out / "loadavg-after.txt").read_text().strip()} after; PostgreSQL {m["postgres"]} '
      f'(fsync={m["fsync"]}, synchronous_commit={m["synchronous_commit"]}).')
summary = {}
for config in ("default", "tuned"):
    print()
    print(f"### {config}")
    print()
    print("| scenario | webhooks off ops/s | default events ops/s | `*` ops/s | p99 ms (off / default / `*`) |")
    print("|---|---|---|---|---|")
    for s in ("refresh", "login-code", "mixed"):
        rows = [ops(f"{config}-{mode}", s) for mode in ("off", "on", "all")]
        cell = lambda r, k: "—" if r is None else (f'{r[k]:.0f}' if k == "operationsPerSecond" else f'{r["latencyMs"]["p99"]}')
        print(f'| {s} | {cell(rows[0], "operationsPerSecond")} | {cell(rows[1], "operationsPerSecond")} | '
              f'{cell(rows[2], "operationsPerSecond")} | {" / ".join(cell(r, "p99") for r in rows)} |')
    runs = [(mode, s, label) for mode, s, label in (
        ("on", "login-code", "login-code, default events"),
        ("on", "mixed", "mixed, default events"),
        ("all", "mixed", "mixed, `*` (every event)"),
    ) if (out / f"{config}-{mode}-{s}-window.json").exists()]
    if not runs:
        continue
    print()
    print("| deliveries | events delivered | per s during load | delay p50 ms | p90 ms | p99 ms | max ms "
          "| pending at end of load | drained in s | per s draining |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, s, label in runs:
        d = deliveries(f"{config}-{mode}", s)
        summary[f"{config}-{mode}-{s}"] = d
        dl = d["delayMs"]
        rate = "—" if d["perSecondDraining"] is None else f'{d["perSecondDraining"]:.0f}'
        print(f'| {label} | {d["events"]} | {d["perSecondDuringLoad"]:.0f} | {dl[50]:.0f} | {dl[90]:.0f} | '
              f'{dl[99]:.0f} | {dl["max"]:.0f} | {d["window"]["pendingAtEnd"]} | {d["drainSeconds"]:.1f} | {rate} |')
(out / "deliveries.json").write_text(json.dumps(summary, indent=2))
