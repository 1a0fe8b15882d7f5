#!/usr/bin/env python3
"""Turns the raw lines of benches/load/run into the Markdown report: medians per target
and the ratios serin/peer for every peer that was measured, and serin/direct."""
import statistics
import sys
from collections import defaultdict

path, rounds, duration = sys.argv[1], sys.argv[2], sys.argv[3]
vals = defaultdict(list)
rate = None
for line in open(path):
    parts = line.split()
    if len(parts) != 4:
        continue
    scen, metric, target, value = parts
    if scen == "S2" and metric == "rate":
        rate = value
        continue
    try:
        vals[(scen, metric, target)].append(float(value))
    except ValueError:
        pass

# The peers in the order of the report's columns, with what each is called there and the
# TLS library each uses. A peer that was not run (not built, not installed) has no column.
PEER_NAMES = {"haproxy": "HAProxy", "nginx": "nginx", "caddy": "Caddy", "pingora": "Pingora"}
TLS_LIBS = {"serin": "rustls", "haproxy": "OpenSSL", "nginx": "OpenSSL", "caddy": "Go crypto/tls", "pingora": "OpenSSL"}
PEERS = [p for p in PEER_NAMES if any(k[2] == p for k in vals)]


def med(scen, metric, target):
    v = vals.get((scen, metric, target))
    return statistics.median(v) if v else None


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def num(v, fmt="{:,.0f}"):
    return fmt.format(v) if v is not None else "–"


def header(cells):
    print("| " + " | ".join(cells) + " |")
    print("|---" * len(cells) + "|")


def row(cells):
    print("| " + " | ".join(cells) + " |")


names = [PEER_NAMES[p] for p in PEERS]
per_peer = [f"serin/{n}" for n in names]

print(f"# serin load benchmark — {rounds} round(s) of {duration} s per target, interleaved; medians\n")
print("Proxies pinned to core 0 with one worker/thread; load generator and backend (nginx `return 200`) on core 1.\n")

if any(k[0] == "S1" for k in vals):
    print("## S1 — closed-loop throughput, HTTP/1.1 keep-alive (wrk -t1), req/s\n")
    header(["conns", "direct", "serin", *names, *per_peer, "serin/direct"])
    for c in ("c32", "c64"):
        s, d = med("S1", c, "serin"), med("S1", c, "direct")
        if s is None:
            continue
        peers = [med("S1", c, p) for p in PEERS]
        row([c[1:], num(d), num(s), *map(num, peers), *(ratio(s, p) for p in peers), ratio(s, d)])
    print()
    if any(k[1] == "user_us" for k in vals if k[0] == "S1"):
        print("CPU of the proxy's core per request at c32, µs (from /proc/<pid>/stat over the run; the kernel part is mostly loopback TCP, paid alike):\n")
        header(["", "user", "kernel", "total"])
        for t in ("serin", *PEERS):
            u, k = med("S1", "user_us", t), med("S1", "sys_us", t)
            total = u + k if u is not None and k is not None else None
            row([PEER_NAMES.get(t, t), num(u, "{:.2f}"), num(k, "{:.2f}"), num(total, "{:.2f}")])
        print()

if any(k[0] == "S2" for k in vals):
    print(f"## S2 — latency at {rate} req/s (50 % of HAProxy's S1 capacity), open loop (oha --latency-correction), µs added over direct\n")
    header(["percentile", "direct", "serin added", *(f"{n} added" for n in names), *per_peer])
    for p in ("p50", "p99", "p99.9"):
        d = med("S2", p, "direct")

        def added(t):
            v = med("S2", p, t)
            return v - d if v is not None and d is not None else None

        s = added("serin")
        peers = [added(t) for t in PEERS]
        row([p, num(d), num(s), *map(num, peers), *(ratio(s, a) for a in peers)])
    print()

if any(k[0] == "S3" for k in vals):
    s, p = med("S3", "cpu_us", "serin"), med("S3", "cpu_us", "serin-plain")
    print("## S3 — CPU per request of serin's own features (wrk -c32, from /proc/PID/stat)\n")
    header(["serin: split + sticky + histograms + rollout analysed", "serin: one version", "feature cost"])
    cost = f"{(s - p) / p * 100:+.1f} %" if s is not None and p else "–"
    row([f"{num(s, '{:.2f}')} µs", f"{num(p, '{:.2f}')} µs", cost])
    print()

if any(k[0] == "S4" for k in vals):
    s = med("S4", "h2", "serin")
    peers = [med("S4", "h2", t) for t in PEERS]
    print("## S4 — HTTP/2 cleartext downstream (h2load -c16 -m16), req/s\n")
    header(["serin", *names, *per_peer])
    row([num(s), *map(num, peers), *(ratio(s, p) for p in peers)])
    print()

if any(k[0] == "S4TLS" for k in vals):
    print("## S4TLS — TLS 1.3 downstream (TLS_AES_128_GCM_SHA256, X25519, one ECDSA P-256 certificate), req/s\n")
    header(["client", "serin (rustls)", *(f"{n} ({TLS_LIBS[p]})" for p, n in zip(PEERS, names)), *per_peer])
    for metric, client in (("h2", "h2load -c16 -m16, h2 by ALPN"), ("h1", "wrk -c32, HTTP/1.1")):
        s = med("S4TLS", metric, "serin")
        if s is None:
            continue
        peers = [med("S4TLS", metric, t) for t in PEERS]
        row([client, num(s), *map(num, peers), *(ratio(s, p) for p in peers)])
    print()

s5 = [k for k in vals if k[0] == "S5"]
if s5:
    s5_rate = med("S5", "rate", "-")
    # Each target's label (its balancing) comes as "S5 label TARGET POLICY", spaces as "+".
    labels = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 4 and parts[:2] == ["S5", "label"]:
            labels[parts[2]] = parts[3]
    targets = [t for t in ("serin", "serin-rr", "haproxy", "nginx", "caddy", "pingora", "haproxy-rr") if med("S5", "p99", t) is not None]
    print(f"## S5 — one stable endpoint of three 10 ms slower: latency at {num(s5_rate)} req/s, open loop (oha --latency-correction), µs\n")
    print("90/10 between two versions; version 1 has three endpoints, one of them answering 10 ms late (nginx `echo_sleep`). "
          "The target: serin's p99 at most the best p99 of HAProxy `leastconn`, nginx `least_conn` and serin's own round robin. "
          "HAProxy `roundrobin` is there as a reference for round robin itself in this setup.\n")

    def s5_name(t):
        name = {"serin-rr": "serin", "haproxy-rr": "HAProxy"}.get(t, PEER_NAMES.get(t, t))
        return f"{name} ({labels.get(t, '?').replace('+', ' ')})"

    header(["percentile", *map(s5_name, targets)])
    for p in ("p50", "p90", "p99", "p99.9"):
        row([p, *(num(med("S5", p, t)) for t in targets)])
    print()
    s = med("S5", "p99", "serin")
    rivals = {t: med("S5", "p99", t) for t in ("serin-rr", "haproxy", "nginx") if med("S5", "p99", t) is not None}
    if s is not None and rivals:
        best = min(rivals, key=rivals.get)
        verdict = "met" if s <= rivals[best] else "not met"
        print(f"serin's p99 / the best of those ({s5_name(best)}, {num(rivals[best])} µs): "
              f"{ratio(s, rivals[best])} — target {verdict}."
              + ("" if "serin-rr" in rivals else " serin ran its round robin (no `--s5-serin`): this is the baseline.")
              + "\n")
    failed = {t: sum(vals[("S5", "failed", t)]) for t in targets if ("S5", "failed", t) in vals}
    if failed:
        print("Requests not answered 200 (over all rounds): " + ", ".join(f"{s5_name(t)} {v:,.0f}" for t, v in failed.items()) + ".\n")
    slow = {t: med("S5", "slow_share", t) for t in targets if med("S5", "slow_share", t) is not None}
    if slow:
        print("Share of all requests that the slow endpoint answered (round robin: 30 %): "
              + ", ".join(f"{s5_name(t)} {v:.1f} %" for t, v in slow.items()) + ".\n")

mem = [k for k in vals if k[0] == "MEM"]
if mem:
    held = sorted({k[1] for k in mem if k[1].startswith(("conns", "fresh"))}, key=lambda c: (c[5:], c[0] != "f"))
    columns = [m for m in ("start", "after-load") if any(k[1] == m for k in mem)] + held
    titles = {"start": "idle, before any traffic", "after-load": "idle, after the load scenarios"}

    def title(c):
        if c in titles:
            return titles[c]
        if c.startswith("fresh"):
            return f"{c[5:]} keep-alive connections, at once after their request"
        return f"{c[5:]} idle keep-alive connections (5 s later)"

    print("## Memory — RSS, MB\n")
    header(["", *(title(c) for c in columns)])
    for t in ("serin", *PEERS):
        cells = [num((med("MEM", m, t) or 0) / 1024, "{:.1f}") for m in columns]
        row([PEER_NAMES.get(t, t), *cells])
    print()
