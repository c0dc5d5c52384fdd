#!/usr/bin/python3
"""Turns the raw phases of scripts/bench into results.json and results.md.

    report.py OUT_DIR MODE RAW_DIR REPO

Every figure is set against its target and, where the issue defines one,
against what the database does with the same SQL in the same run.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

out, mode, raw, repo = sys.argv[1:5]
ph = [json.loads(l) for l in open(os.path.join(raw, "phases.jsonl")) if l.strip()]
pg = open(os.path.join(raw, "pg_settings.tsv")).read().strip().split("\t")


def cpu_model():
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            return l.split(":", 1)[1].strip()
    return platform.processor()


mem_kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
try:
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                                     text=True).strip()
    dirty = subprocess.run(["git", "-C", repo, "diff", "--quiet", "HEAD"]).returncode != 0
except Exception:
    commit, dirty = "?", False
machine = {"loadavg_at_start": open(os.path.join(raw, "loadavg_start.txt")).read().split()[:3],
           "nproc": os.cpu_count(), "cpu": cpu_model(), "memory_gib": round(mem_kb / 1048576, 1),
           "kernel": platform.release(), "postgresql": pg[0], "shared_buffers": pg[1],
           "synchronous_commit": pg[2], "fsync": pg[3], "wal_level": pg[4],
           "max_wal_size": pg[5], "checkpoint_timeout": pg[6], "max_connections": pg[7]}
SIZE = {"small": "1 KB order", "big": "4.8 KB order"}


def ratio(x, y):
    return round(x / y, 2) if x is not None and y else None


def f(x, nd=0):
    return "–" if x is None else f"{x:,.{nd}f}"


def ok(v, target, higher=True):
    if v is None:
        return ""
    return " ✓" if (v >= target if higher else v <= target) else " ✗"


res = {"mode": mode,
       "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "commit": commit + ("+dirty" if dirty else ""), "machine": machine}

# ---------------------------------------------------------------- (a) + formed
sql = [p for p in ph if p["phase"] == "sql"]
for s in sql:
    s["orders_per_s"] = s["tps"] * s["batch"]
res["sql"] = sql


def sql_rate(name):
    return next((s["orders_per_s"] for s in sql if s["name"] == name), None)


# ---------------------------------------------------------------- (b) ingest
ing = []
for p in (x for x in ph if x["phase"] == "ingest"):
    lg = p["loadgen"]
    bc = p["batch_count"] or 0
    ing.append({"size": p["size"], "concurrency": p["concurrency"],
                "acked_per_s": round(lg["ok_per_s"], 1), "ok": lg["ok"],
                "non_2xx": lg["status_4xx"] + lg["status_5xx"] + lg["status_other"],
                "errors": lg["errors"], "latency_ms": lg["latency_ms"], "wall_s": lg["wall_s"],
                "cpu_s_per_1000": round(p["ordersync_cpu_s"] / lg["ok"] * 1000, 3) if lg["ok"] else None,
                "ordersync_cores": round(p["ordersync_cpu_s"] / lg["wall_s"], 2) if lg["wall_s"] else None,
                "peak_rss_mb": round(p["ordersync_hwm_kb"] / 1024, 1),
                "avg_batch": round(p["batch_sum"] / bc, 1) if bc else None,
                "avg_commit_ms": round(p["commit_seconds_sum"] / bc * 1000, 2) if bc else None,
                "loadgen_cores": round(lg["cpu"]["share"], 3), "machine_busy": p["machine_busy"]})
res["ingest"] = ing
best = {}
for size in ("small", "big"):
    rows = [r for r in ing if r["size"] == size]
    if rows:
        b = max(rows, key=lambda r: r["acked_per_s"])
        formed = next((s for s in sql if s["name"].startswith("ingest-%s-formed" % size)), None)
        best[size] = {"concurrency": b["concurrency"], "acked_per_s": b["acked_per_s"],
                      "avg_batch": b["avg_batch"],
                      "sql_at_formed_batch": formed["orders_per_s"] if formed else None,
                      "sql_batch": formed["batch"] if formed else None,
                      "sql_clients": formed["clients"] if formed else None,
                      "ratio": ratio(b["acked_per_s"], formed["orders_per_s"] if formed else None)}
res["ingest_best"] = best

# ---------------------------------------------------------------- (c) e2e
e = next((x for x in ph if x["phase"] == "e2e"), None)
if e:
    lg = e["loadgen"]
    span = e["t_done"] - e["t_start"]
    samples = [list(map(float, l.split())) for l in open(os.path.join(raw, "e2e-samples.txt"))
               if len(l.split()) == 5]
    in_load = [s for s in samples if s[0] <= e["t_load_end"]]
    win = None
    if len(in_load) >= 3:
        a, b = in_load[len(in_load) // 5], in_load[-1]
        if b[0] > a[0]:
            win = (b[1] - a[1]) / (b[0] - a[0])
    res["e2e"] = {"concurrency": e["concurrency"], "ingested": lg["ok"],
                  "ingest_per_s": round(lg["ok_per_s"], 1), "delivered_all_three": e["delivered_min"],
                  "complete": e["complete"], "span_s": round(span, 2),
                  "orders_per_s": round(e["delivered_min"] / span, 1) if span > 0 else 0,
                  "delivered_per_s_during_load": round(win, 1) if win else None,
                  "cpu_s_per_1000": round(e["ordersync_cpu_s"] / e["delivered_min"] * 1000, 3) if e["delivered_min"] else None,
                  "ordersync_cores": round(e["ordersync_cpu_s"] / span, 2) if span > 0 else None,
                  "sinks_cores": round(e["sinks_cpu_s"] / span, 2) if span > 0 else None,
                  "peak_rss_mb": round(e["ordersync_hwm_kb"] / 1024, 1),
                  "machine_busy": e["machine_busy"]}

# ---------------------------------------------------------------- (d) latency
l = next((x for x in ph if x["phase"] == "latency"), None)
if l:
    lg = l["loadgen"]
    res["latency"] = {"rate": l["rate"], "achieved_per_s": round(lg["ok_per_s"], 1), "ok": lg["ok"],
                      "sent": lg["sent"], "complete": l["complete"],
                      "commit_to_last_2xx_ms": l["e2e_ms"], "ingest_ack_ms": lg["latency_ms"],
                      "cpu_s_per_1000": round(l["ordersync_cpu_s"] / lg["ok"] * 1000, 3) if lg["ok"] else None,
                      "peak_rss_mb": round(l["ordersync_hwm_kb"] / 1024, 1),
                      "machine_busy": l["machine_busy"]}

# ---------------------------------------------------------------- (e) overload
o = next((x for x in ph if x["phase"] == "overload"), None)
if o:
    lg = o["loadgen"]
    res["overload"] = {"rate": o["rate"], "sent": lg["sent"], "ok": lg["ok"],
                       "acked_per_s": round(lg["ok_per_s"], 1), "status_5xx": lg["status_5xx"],
                       "errors": lg["errors"], "ack_ms": lg["latency_ms"],
                       "peak_rss_mb": round(o["ordersync_hwm_kb"] / 1024, 1),
                       "machine_busy": o["machine_busy"]}

# ---------------------------------------------------------------- (f) wal
w = next((x for x in ph if x["phase"] == "wal"), None)
if w:
    res["wal"] = {"orders": w["orders"], "bytes_per_order": round(w["wal_bytes"] / w["orders"]),
                  "complete": w["complete"], "sizes": w["sizes"],
                  "cpu_s_per_1000": round(w["ordersync_cpu_s"] / w["orders"] * 1000, 3)}

# ---------------------------------------------------------------- (g) drain
drains = []
for d in (x for x in ph if x["phase"] == "drain"):
    samples = [list(map(float, s.split())) for s in
               open(os.path.join(raw, "drain-%d-samples.txt" % (d["rows"] - d["rows"] % 3 if False else d["rows"])))
               if len(s.split()) == 5] if os.path.exists(os.path.join(raw, "drain-%d-samples.txt" % d["rows"])) else []
    first = next((s for s in samples if s[2] > 0), None)
    last = None
    for s in samples:
        if last is None or s[2] > last[2]:
            last = s
    rate = (last[2] - first[2]) / (last[0] - first[0]) if first and last and last[0] > first[0] else None
    span = d["t_end"] - d["t_start"]
    overall = d["delivered_sum"] / span if span > 0 else 0
    drains.append({"rows": d["rows"], "payload_bytes": d["payload_bytes"],
                   "delivered": d["delivered_sum"], "complete": d["complete"],
                   "span_s": round(span, 2), "deliveries_per_s": round(rate or overall, 1),
                   "deliveries_per_s_overall": round(overall, 1),
                   "peak_rss_mb": round(d["ordersync_hwm_kb"] / 1024, 1),
                   "cpu_s_per_1000": round(d["ordersync_cpu_s"] / d["delivered_sum"] * 1000, 3) if d["delivered_sum"] else None,
                   "ordersync_cores": round(d["ordersync_cpu_s"] / span, 2) if span > 0 else None,
                   "sinks_cores": round(d["sinks_cpu_s"] / span, 2) if span > 0 else None,
                   "machine_busy": d["machine_busy"]})
res["drain"] = drains

# ---------------------------------------------------------------- (h) framework receivers
fw = next((x for x in ph if x["phase"] == "framework"), None)
if fw:
    span = fw["t_end"] - fw["t_start"]
    recv = fw.get("receivers") or []
    res["framework"] = {
        "rows": fw["rows"], "delivered": fw["delivered_sum"], "complete": fw["complete"],
        "span_s": round(span, 2),
        "deliveries_per_s": round(fw["delivered_sum"] / span, 1) if span > 0 else None,
        "cpu_s_per_1000": round(fw["ordersync_cpu_s"] / fw["delivered_sum"] * 1000, 3) if fw["delivered_sum"] else None,
        "ordersync_cores": round(fw["ordersync_cpu_s"] / span, 2) if span > 0 else None,
        "peak_rss_mb": round(max(fw["ordersync_hwm_kb"], fw.get("max_rss_kb", 0)) / 1024, 1),
        "machine_busy": fw["machine_busy"],
        "burst_orders": fw.get("burst_orders"),
        "receiver_requests": sum(r.get("requests", 0) for r in recv),
        "receiver_connections": sum(r.get("connections", 0) for r in recv),
        "receiver_idle_closes": sum(r.get("idle_closes", 0) for r in recv)}
peaks = [r["peak_rss_mb"] for r in ing] + [res[k]["peak_rss_mb"] for k in ("e2e", "latency", "overload", "framework")
                                           if k in res] + [d["peak_rss_mb"] for d in drains]
res["peak_rss_mb"] = max(peaks) if peaks else None
try:
    res["sinks"] = [json.loads(s) for s in open(os.path.join(raw, "sinks-state.txt")) if s.strip()]
except Exception:
    res["sinks"] = None
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=2)

# ---------------------------------------------------------------- markdown
md = [f"Run {res['time']} ({mode} mode), commit {res['commit']}.\n",
      f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory_gib']} GiB RAM, "
      f"Linux {machine['kernel']}, load average {' '.join(machine['loadavg_at_start'])} at start; "
      f"PostgreSQL {machine['postgresql']}: shared_buffers={machine['shared_buffers']}, "
      f"synchronous_commit={machine['synchronous_commit']}, fsync={machine['fsync']}, "
      f"wal_level={machine['wal_level']}, max_wal_size={machine['max_wal_size']}. Everything "
      "(PostgreSQL, ordersync, three receivers, the load generator) shares these cores.\n",
      "### Results\n",
      "| figure | conditions | result | target | ratio |",
      "|---|---|---|---|---|"]
sql_clients = sorted({s["clients"] for s in sql if s["batch"] == 32}, reverse=True)
for size in ("big", "small"):
    for c in sql_clients:
        a, b = sql_rate(f"ingest-{size}-b32-c{c}"), sql_rate(f"lean-{size}-b32-c{c}")
        if a is None:
            continue
        how = "more clients than cores" if c > machine["nproc"] else "ordersync's ingest connections"
        md.append(f"| ingest SQL vs the lean yardstick, {SIZE[size]} | pgbench, 32 orders per transaction, {c} clients ({how}), same run | "
                  f"`ingest_batch()` **{f(a)}** orders/s, yardstick {f(b)} | ≥ 0.9× | **{ratio(a, b)}**{ok(ratio(a, b), 0.9)} |")
for size in ("small", "big"):
    x = best.get(size)
    if x:
        md.append(f"| HTTP ingest vs its own SQL, {SIZE[size]} | best concurrency ({x['concurrency']}), relay off, avg batch {f(x['avg_batch'],1)}; "
                  f"pgbench at batch {x['sql_batch']} on {x['sql_clients']} clients (its connections): {f(x['sql_at_formed_batch'])} orders/s | "
                  f"**{f(x['acked_per_s'])} acks/s**{ok(x['acked_per_s'], 5000) if size == 'small' else ''} | ≥ 0.8×{'; ≥ 5,000/s' if size == 'small' else ''} | **{x['ratio']}**{ok(x['ratio'], 0.8)} |")
if "e2e" in res:
    x = res["e2e"]
    md.append(f"| end to end, {SIZE['small']} | relay on, closed loop at {x['concurrency']}, {x['ingested']:,} orders × 3 destinations; ingest {f(x['ingest_per_s'])}/s, "
              f"delivered during the load {f(x['delivered_per_s_during_load'])}/s{'' if x['complete'] else '; NOT all delivered'} | "
              f"**{f(x['orders_per_s'])} orders/s**{ok(x['orders_per_s'], 3000)} delivered to all three (first ack → last delivery) | ≥ 3,000/s | – |")
if "latency" in res:
    x = res["latency"]
    c = x["commit_to_last_2xx_ms"]
    md.append(f"| latency at {f(x['rate'])}/s, {SIZE['small']} | open loop (achieved {f(x['achieved_per_s'])}/s), relay on; per order, its commit → the last of 3 destinations' 2xx ({c.get('orders') or 0:,} orders) | "
              f"**p50 {f(c.get('p50'),1)} ms**{ok(c.get('p50'), 5, False)}, **p99 {f(c.get('p99'),1)} ms**{ok(c.get('p99'), 50, False)}, max {f(c.get('max'),0)} ms; "
              f"ack p50 {f(x['ingest_ack_ms']['p50'],2)} / p99 {f(x['ingest_ack_ms']['p99'],2)} ms | p50 ≤ 5 ms, p99 ≤ 50 ms | – |")
if "overload" in res:
    x = res["overload"]
    md.append(f"| overload, {SIZE['small']} | open loop at {f(x['rate'])}/s, relay on: {x['ok']:,} acked ({f(x['acked_per_s'])}/s), {x['status_5xx']:,} answered 503, {x['errors']:,} errors | "
              f"peak RSS **{f(x['peak_rss_mb'],1)} MB**{ok(x['peak_rss_mb'], 32, False)} | ≤ 32 MB | – |")
if "wal" in res:
    x = res["wal"]
    md.append(f"| write volume, {SIZE['small']} | {x['orders']:,} orders ingested and delivered to 3 destinations, full_page_writes off, LSN difference | "
              f"**{f(x['bytes_per_order'])} bytes of WAL per order**{ok(x['bytes_per_order'], 4096, False)} | ≤ 4 KB (the outbox wrote 15.3 KB) | – |")
d20 = next((d for d in drains if d["rows"] <= 30000), None)
dbig = next((d for d in reversed(drains) if d["rows"] > 30000), None)
for d in drains:
    md.append(f"| drain, {d['rows']:,} pending deliveries | {d['rows'] // 3:,} events × 3 destinations made by SQL (payload ~{d['payload_bytes']} B), then the relay on; "
              f"{d['delivered']:,} delivered in {f(d['span_s'],1)} s{'' if d['complete'] else ' (time cap reached)'} | "
              f"**{f(d['deliveries_per_s'])} deliveries/s**{ok(d['deliveries_per_s'], 5000)} | ≥ 5,000/s | – |")
if d20 and dbig:
    r = ratio(dbig["deliveries_per_s"], d20["deliveries_per_s"])
    md.append(f"| drain, large backlog vs small | {dbig['rows']:,} vs {d20['rows']:,} pending | **{r}**{ok(r, 0.67)} | ≥ 0.67× | – |")
if "framework" in res and d20:
    x = res["framework"]
    r = ratio(x["cpu_s_per_1000"], d20["cpu_s_per_1000"])
    md.append(f"| drain to framework-style receivers, {x['rows']:,} pending | keep-alive with Keep-Alive: timeout=5, Date, chunked JSON answers, idle connections closed after 5 s; "
              f"{x['delivered']:,} delivered at {f(x['deliveries_per_s'])}/s, then 2 bursts 7 s apart ({x['burst_orders']:,} orders); the receivers saw "
              f"{x['receiver_requests']:,} requests on {x['receiver_connections']:,} connections ({x['receiver_idle_closes']:,} closed idle) | "
              f"**{f(x['cpu_s_per_1000'],3)} core-s per 1,000 deliveries** vs {f(d20['cpu_s_per_1000'],3)} to the fast sink | ≈ 1× | **{r}** |")
md.append(f"| peak RSS, any phase | VmHWM, ordersync restarted per phase | **{f(res['peak_rss_mb'],1)} MB**{ok(res['peak_rss_mb'], 32, False)} | ≤ 32 MB | – |")
md.append("")
md.append("### Ingest, per concurrency\n")
md.append("| order | concurrency | acks/s | p50 / p99 ms | avg batch | avg commit ms | ordersync CPU s per 1,000 | ordersync cores | load generator cores | machine busy | peak RSS MB |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|")
for r in ing:
    lat = r["latency_ms"]
    md.append(f"| {SIZE[r['size']]} | {r['concurrency']} | {f(r['acked_per_s'])} | {f(lat['p50'],2)} / {f(lat['p99'],2)} | {f(r['avg_batch'],1)} | {f(r['avg_commit_ms'],1)} | "
              f"{f(r['cpu_s_per_1000'],3)} | {f(r['ordersync_cores'],2)} | {f(r['loadgen_cores'],3)} | {f(r['machine_busy']*100)}% | {f(r['peak_rss_mb'],1)} |")
md.append("")
md.append("### Cost of the other phases\n")
md.append("| phase | ordersync CPU s per 1,000 orders | ordersync cores | receivers' cores | machine busy | peak RSS MB |")
md.append("|---|---|---|---|---|---|")
if "e2e" in res:
    x = res["e2e"]
    md.append(f"| end to end | {f(x['cpu_s_per_1000'],3)} | {f(x['ordersync_cores'],2)} | {f(x['sinks_cores'],2)} | {f(x['machine_busy']*100)}% | {f(x['peak_rss_mb'],1)} |")
if "latency" in res:
    x = res["latency"]
    md.append(f"| latency @ {f(x['rate'])}/s | {f(x['cpu_s_per_1000'],3)} | – | – | {f(x['machine_busy']*100)}% | {f(x['peak_rss_mb'],1)} |")
if "wal" in res:
    md.append(f"| write volume | {f(res['wal']['cpu_s_per_1000'],3)} | – | – | – | – |")
for d in drains:
    md.append(f"| drain {d['rows']:,} (per 1,000 deliveries) | {f(d['cpu_s_per_1000'],3)} | {f(d['ordersync_cores'],2)} | {f(d['sinks_cores'],2)} | {f(d['machine_busy']*100)}% | {f(d['peak_rss_mb'],1)} |")
if "framework" in res:
    x = res["framework"]
    md.append(f"| drain {x['rows']:,}, framework-style receivers (per 1,000 deliveries) | {f(x['cpu_s_per_1000'],3)} | {f(x['ordersync_cores'],2)} | – | {f(x['machine_busy']*100)}% | {f(x['peak_rss_mb'],1)} |")
md.append("")
md.append("### The SQL alone (pgbench)\n")
md.append("| run | orders per transaction | clients | transactions/s | orders/s | avg latency ms | machine busy |")
md.append("|---|---|---|---|---|---|---|")
for s in sql:
    md.append(f"| {s['name']} | {s['batch']} | {s['clients']} | {f(s['tps'],1)} | {f(s['orders_per_s'])} | {f(s['latency_avg_ms'],2)} | {f(s['machine_busy']*100)}% |")
md.append("")
if "wal" in res:
    sz = res["wal"]["sizes"]
    md.append(f"Sizes in the write-volume run: raw payload {f(sz.get('inbound_payload'))} B, order row {f(sz.get('order_row'))} B, "
              f"event envelope {f(sz.get('event_payload'))} B ({f(sz.get('event_payload_stored'))} B stored, lz4).\n")
if res.get("sinks"):
    tot = {k: sum(s.get(k, 0) for s in res["sinks"]) for k in ("received", "valid", "invalid")}
    md.append(f"Receivers: {tot['received']:,} deliveries received, {tot['valid']:,} with a valid signature, {tot['invalid']:,} invalid.\n")
open(os.path.join(out, "results.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
