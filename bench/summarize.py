#!/usr/bin/python3
"""Turns bench/compare's results.jsonl into summary.md (median, min, max of
each figure per server, and Parley's ratios to each peer) and SVG plots
drawn with gnuplot. Standard library only: runs on Debian's python3."""
import json
import os
import statistics
import subprocess
import sys


def load(out):
    rows = []
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def stats(values):
    values = [v for v in values if v is not None and v >= 0]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(s, unit=""):
    if s is None:
        return "-"
    med, lo, hi = s
    def n(x):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"
    return f"{n(med)}{unit} ({n(lo)}-{n(hi)})"


def group(rows, scenario, key=None):
    """{server: {key: [r, ...]}} for one scenario."""
    g = {}
    for row in rows:
        r = row["r"]
        if r.get("scenario") != scenario:
            continue
        k = key(r) if key else None
        g.setdefault(row["server"], {}).setdefault(k, []).append(r)
    return g


def gnuplot(out, name, script):
    path = os.path.join(out, name + ".gp")
    with open(path, "w") as f:
        f.write(script)
    try:
        subprocess.run(["gnuplot", path], check=True, cwd=out, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"gnuplot failed for {name}: {e}", file=sys.stderr)


def main(out):
    rows = load(out)
    servers = [s for s in ("parley", "prosody", "ejabberd") if any(r["server"] == s for r in rows)]
    md = ["# parley-bench comparison", "",
          f"Run directory: `{out}`. Median of the repeats, (min-max) after it.", ""]

    # logins
    g = group(rows, "login")
    md += ["## Logins (TLS, SCRAM, bind, roster, presence)", "",
           "| Server | logins/s | p99 ms | server µs per login |", "|---|---|---|---|"]
    login_med = {}
    for s in servers:
        rs = g.get(s, {}).get(None, [])
        a = stats([r["logins_per_s"] for r in rs])
        login_med[s] = a[0] if a else None
        md.append(f"| {s} | {fmt(a)} | {fmt(stats([r['p99_ms'] for r in rs]))} | "
                  f"{fmt(stats([r['server_us_per_login'] for r in rs]))} |")
    md.append("")

    # chat
    g = group(rows, "chat", key=lambda r: r["offered_rate"])
    md += ["## Chat (one-to-one messages)", "",
           "| Server | offered msgs/s (0 = as fast as possible) | delivered msgs/s | p50 ms | "
           "p99 ms | server µs per message |", "|---|---|---|---|---|---|"]
    chat_max = {}
    for s in servers:
        for rate in sorted(g.get(s, {}), key=lambda x: (x == 0, x)):
            rs = g[s][rate]
            d = stats([r["msgs_per_s"] for r in rs])
            if rate == 0 and d:
                chat_max[s] = d[0]
            md.append(f"| {s} | {rate:.0f} | {fmt(d)} | {fmt(stats([r['p50_ms'] for r in rs]))} | "
                      f"{fmt(stats([r['p99_ms'] for r in rs]))} | "
                      f"{fmt(stats([r['server_us_per_msg'] for r in rs]))} |")
    md.append("")

    # presence
    g = group(rows, "presence")
    md += ["## Presence (login storm, 20 contacts each)", "",
           "| Server | presence stanzas delivered/s |", "|---|---|"]
    for s in servers:
        rs = g.get(s, {}).get(None, [])
        md.append(f"| {s} | {fmt(stats([r['presences_per_s'] for r in rs]))} |")
    md.append("")

    # idle
    g = group(rows, "idle", key=lambda r: r["sessions"])
    md += ["## Idle sessions (server RSS growth per authenticated TLS session)", "",
           "| Server | sessions | KiB per session | server CPU while idle % |", "|---|---|---|---|"]
    idle_pts = {}
    for s in servers:
        for n in sorted(g.get(s, {})):
            rs = g[s][n]
            k = stats([r["kib_per_session"] for r in rs])
            if k:
                idle_pts.setdefault(s, []).append((n, k[0]))
            md.append(f"| {s} | {n} | {fmt(k)} | "
                      f"{fmt(stats([r['server_idle_cpu_pct'] for r in rs]))} |")
    md.append("")

    # ratios
    if "parley" in servers:
        md += ["## Ratios (Parley / peer, medians)", "", "| Peer | logins/s | max msgs/s |",
               "|---|---|---|"]
        for s in servers:
            if s == "parley":
                continue
            lr = (login_med.get("parley") or 0) / login_med[s] if login_med.get(s) else None
            cr = (chat_max.get("parley") or 0) / chat_max[s] if chat_max.get(s) else None
            md.append(f"| {s} | {lr:.1f}x |" if lr else f"| {s} | - |")
            md[-1] += f" {cr:.1f}x |" if cr else " - |"
        md.append("")

    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    # plots
    with open(os.path.join(out, "idle.dat"), "w") as f:
        for s, pts in idle_pts.items():
            f.write(f"# {s}\n")
            for n, k in pts:
                f.write(f"{n} {k}\n")
            f.write("\n\n")
    plots = ", ".join(f"'idle.dat' index {i} with linespoints title '{s}'"
                      for i, s in enumerate(idle_pts))
    if plots:
        gnuplot(out, "idle", "set terminal svg size 640,400\nset output 'idle.svg'\n"
                "set xlabel 'idle sessions'\nset ylabel 'KiB per session'\n"
                f"set yrange [0:*]\nplot {plots}\n")
    g = group(rows, "chat", key=lambda r: r["offered_rate"])
    with open(os.path.join(out, "chat.dat"), "w") as f:
        for s in servers:
            f.write(f"# {s}\n")
            for rate in sorted(x for x in g.get(s, {}) if x > 0):
                rs = g[s][rate]
                f.write(f"{rate} {statistics.median(r['msgs_per_s'] for r in rs)} "
                        f"{statistics.median(r['p99_ms'] for r in rs)}\n")
            f.write("\n\n")
    if servers:
        p1 = ", ".join(f"'chat.dat' index {i} using 1:2 with linespoints title '{s}'"
                       for i, s in enumerate(servers))
        p2 = ", ".join(f"'chat.dat' index {i} using 1:3 with linespoints title '{s}'"
                       for i, s in enumerate(servers))
        gnuplot(out, "chat", "set terminal svg size 640,400\nset output 'chat.svg'\n"
                "set xlabel 'offered msgs/s'\nset ylabel 'delivered msgs/s'\n"
                f"plot {p1}\n"
                "set output 'chat_p99.svg'\nset ylabel 'p99 latency (ms)'\nset logscale y\n"
                f"plot {p2}\n")
        with open(os.path.join(out, "login.dat"), "w") as f:
            for i, s in enumerate(servers):
                f.write(f"{i} {s} {login_med.get(s) or 0}\n")
        gnuplot(out, "login", "set terminal svg size 640,400\nset output 'login.svg'\n"
                "set style fill solid\nset boxwidth 0.5\nset ylabel 'logins/s'\n"
                "set yrange [0:*]\nplot 'login.dat' using 1:3:xtic(2) with boxes notitle\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1])
