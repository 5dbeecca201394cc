#!/usr/bin/env python3
"""Prints the tables of docs/benchmarks.md from the JSON reports that bench/run-docs.sh wrote.

    python3 bench/report.py [bench-results]
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")


def load(name):
    path = out / f"{name}.json"
    if not path.exists() or path.stat().st_size == 0:
        return None
    return json.loads(path.read_text())


def cell(report, figure, digits=0):
    spread = report["figures"].get(figure)
    if spread is None:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(spread['median'])} ({fmt.format(spread['min'])}–{fmt.format(spread['max'])})"


def table(name, figures):
    data = load(name)
    if data is None:
        print(f"(no {name}.json)\n")
        return
    reports = data["reports"]
    spool = next((r for r in reports if r["target"] == "spool"), None)
    print(f"#### {name}\n")
    print("| figure | " + " | ".join(r["target"] for r in reports) + " |")
    print("|---|" + "---|" * len(reports))
    for figure, digits in figures:
        row = [cell(r, figure, digits) for r in reports]
        print(f"| {figure} | " + " | ".join(row) + " |")
    if spool:
        ratios = []
        for r in reports:
            if r is spool:
                continue
            for figure, _ in figures:
                ours, theirs = spool["figures"].get(figure), r["figures"].get(figure)
                if ours and theirs and theirs["median"] > 0 and ("per_s" in figure):
                    ratios.append(f"{figure} Spool/{r['target']} = {ours['median'] / theirs['median']:.2f}×")
        if ratios:
            print("\nRatios (medians): " + "; ".join(ratios))
    print("\nDurability as measured:\n")
    for r in reports:
        print(f"- **{r['target']}**: {r['durability']}")
    print()


throughput = [
    ("end_to_end_msgs_per_s", 0),
    ("send_ack_ms_p50", 2),
    ("send_ack_ms_p99", 2),
    ("send_ack_ms_p99.9", 2),
    ("end_to_end_ms_p50", 2),
    ("end_to_end_ms_p99", 2),
    ("server_rss_bytes", 0),
    ("server_cpu_us_per_msg", 1),
    ("client_cpu_us_per_msg", 1),
]
table("steady", throughput)
fill = [
    ("fill_msgs_per_s", 0),
    ("drain_msgs_per_s", 0),
    ("send_ack_ms_p99", 2),
    ("server_rss_bytes", 0),
    ("fill_server_cpu_us_per_msg", 1),
    ("drain_server_cpu_us_per_msg", 1),
    ("fill_client_cpu_us_per_msg", 1),
    ("drain_client_cpu_us_per_msg", 1),
]
table("fill-drain-1m", fill)
table("fill-drain-200k", fill)
table("rate-5000", throughput)
table(
    "idle-10k",
    [
        ("wakeup_ms_p50", 3),
        ("wakeup_ms_p99", 3),
        ("end_to_end_ms_p50", 3),
        ("end_to_end_ms_p99", 3),
        ("send_ack_ms_p99", 3),
        ("server_bytes_per_waiter", 0),
        ("server_rss_bytes", 0),
    ],
)
echo = [("calls_per_s", 0), ("call_ms_p50", 3), ("call_ms_p99", 3)]
table("echo", echo)
table("echo-64", echo)
