#!/usr/bin/env python3
"""Turns the raw lines of benches/load/run into the Markdown report: medians per target
and the ratios serin/HAProxy, serin/nginx, serin/direct."""
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


def med(scen, metric, target):
    v = vals.get((scen, metric, target))
    return statistics.median(v) if v else None


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def num(v, fmt="{:,.0f}"):
    return fmt.format(v) if v is not None else "–"


print(f"# serin load benchmark — {rounds} round(s) of {duration} s per target, interleaved; medians\n")
print("Proxies pinned to core 0 with one worker/thread; load generator and backend (nginx `return 200`) on core 1.\n")

if any(k[0] == "S1" for k in vals):
    print("## S1 — closed-loop throughput, HTTP/1.1 keep-alive (wrk -t1), req/s\n")
    print("| conns | direct | serin | HAProxy | nginx | serin/HAProxy | serin/nginx | serin/direct |")
    print("|---|---|---|---|---|---|---|---|")
    for c in ("c32", "c64"):
        d, s, h, n = (med("S1", c, t) for t in ("direct", "serin", "haproxy", "nginx"))
        if s is None:
            continue
        print(f"| {c[1:]} | {num(d)} | {num(s)} | {num(h)} | {num(n)} | {ratio(s, h)} | {ratio(s, n)} | {ratio(s, d)} |")
    print()
    if any(k[1] == "user_us" for k in vals if k[0] == "S1"):
        print("CPU of the proxy's core per request at c32, µs (from /proc/<pid>/stat over the run; the kernel part is mostly loopback TCP, paid alike):\n")
        print("| | user | kernel | total |")
        print("|---|---|---|---|")
        for t, name in (("serin", "serin"), ("haproxy", "HAProxy"), ("nginx", "nginx")):
            u, k = med("S1", "user_us", t), med("S1", "sys_us", t)
            total = u + k if u is not None and k is not None else None
            print(f"| {name} | {num(u, '{:.2f}')} | {num(k, '{:.2f}')} | {num(total, '{:.2f}')} |")
        print()

if any(k[0] == "S2" for k in vals):
    print(f"## S2 — latency at {rate} req/s (50 % of HAProxy's S1 capacity), open loop (oha --latency-correction), µs added over direct\n")
    print("| percentile | direct | serin added | HAProxy added | nginx added | serin/HAProxy |")
    print("|---|---|---|---|---|---|")
    for p in ("p50", "p99", "p99.9"):
        d = med("S2", p, "direct")
        added = {t: (med("S2", p, t) - d if med("S2", p, t) is not None and d is not None else None) for t in ("serin", "haproxy", "nginx")}
        print(f"| {p} | {num(d, '{:.0f}')} | {num(added['serin'], '{:.0f}')} | {num(added['haproxy'], '{:.0f}')} | {num(added['nginx'], '{:.0f}')} | {ratio(added['serin'], added['haproxy'])} |")
    print()

if any(k[0] == "S3" for k in vals):
    s, p = med("S3", "cpu_us", "serin"), med("S3", "cpu_us", "serin-plain")
    print("## S3 — CPU per request of serin's own features (wrk -c32, from /proc/PID/stat)\n")
    print("| serin: split + sticky + histograms + rollout analysed | serin: one version | feature cost |")
    print("|---|---|---|")
    cost = f"{(s - p) / p * 100:+.1f} %" if s is not None and p else "–"
    print(f"| {num(s, '{:.2f}')} µs | {num(p, '{:.2f}')} µs | {cost} |")
    print()

if any(k[0] == "S4" for k in vals):
    s, h, n = (med("S4", "h2", t) for t in ("serin", "haproxy", "nginx"))
    print("## S4 — HTTP/2 cleartext downstream (h2load -c16 -m16), req/s\n")
    print("| serin | HAProxy | nginx | serin/HAProxy | serin/nginx |")
    print("|---|---|---|---|---|")
    print(f"| {num(s)} | {num(h)} | {num(n)} | {ratio(s, h)} | {ratio(s, n)} |")
    print()

if any(k[0] == "S4TLS" for k in vals):
    print("## S4TLS — TLS 1.3 downstream (TLS_AES_128_GCM_SHA256, X25519, one ECDSA P-256 certificate), req/s\n")
    print("| client | serin (rustls) | HAProxy (OpenSSL) | nginx (OpenSSL) | serin/HAProxy | serin/nginx |")
    print("|---|---|---|---|---|---|")
    for metric, client in (("h2", "h2load -c16 -m16, h2 by ALPN"), ("h1", "wrk -c32, HTTP/1.1")):
        s, h, n = (med("S4TLS", metric, t) for t in ("serin", "haproxy", "nginx"))
        if s is None:
            continue
        print(f"| {client} | {num(s)} | {num(h)} | {num(n)} | {ratio(s, h)} | {ratio(s, n)} |")
    print()

mem = [k for k in vals if k[0] == "MEM"]
if mem:
    held = sorted({k[1] for k in mem if k[1].startswith(("conns", "fresh"))}, key=lambda c: (c[5:], c[0] != "f"))
    columns = [m for m in ("start", "after-load") if any(k[1] == m for k in mem)] + held
    names = {"start": "idle, before any traffic", "after-load": "idle, after the load scenarios"}

    def name(c):
        if c in names:
            return names[c]
        if c.startswith("fresh"):
            return f"{c[5:]} keep-alive connections, at once after their request"
        return f"{c[5:]} idle keep-alive connections (5 s later)"

    print("## Memory — RSS, MB\n")
    print("| | " + " | ".join(name(c) for c in columns) + " |")
    print("|---" * (1 + len(columns)) + "|")
    for t, name in (("serin", "serin"), ("haproxy", "HAProxy"), ("nginx", "nginx")):
        cells = [num((med("MEM", m, t) or 0) / 1024, "{:.1f}") for m in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
