#!/usr/bin/env python3
"""Checks that every Spool metric the dashboard and the alert rules name exists in a live server.

    python3 deploy/monitoring/check_metrics.py path/to/spool

Starts `spool serve --metrics-listen 127.0.0.1:0` on a fresh data directory, does a little
traffic with the binary's own client commands (create a queue, send, receive and delete, a
refused call), scrapes /metrics and checks that each `spool_*` name in deploy/monitoring/*
(histograms with their _bucket/_sum/_count series) is a series there. The other names the rules
use come from kube-state-metrics and the kubelet, not from Spool: they must be in EXTERNAL, so a
misspelt Spool metric cannot pass as someone else's. scripts/test runs it. Needs no network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Checked by reading deploy/monitoring/*: names matching these prefixes are not Spool's.
EXTERNAL = {
    "kube_statefulset_replicas": "kube-state-metrics",
    "kube_statefulset_status_replicas_ready": "kube-state-metrics",
    "kubelet_volume_stats_available_bytes": "the kubelet",
    "kubelet_volume_stats_capacity_bytes": "the kubelet",
}
EXTERNAL_PREFIXES = ("kube_", "kubelet_")
STARTUP_SECONDS = 30


def referenced(paths: list[Path]) -> tuple[set[str], set[str]]:
    """(Spool metric names, other metric-like names) named in the monitoring files."""
    spool, other = set(), set()
    for path in paths:
        text = path.read_text(encoding="utf-8")
        spool.update(re.findall(r"\bspool_[a-z0-9_]+", text))
        other.update(re.findall(r"\b(?:%s)[a-z0-9_]+" % "|".join(EXTERNAL_PREFIXES), text))
    return spool, other


def run(binary: str, *args: str, endpoint: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *args, "--endpoint", endpoint], capture_output=True, text=True, timeout=30, check=check
    )


def scrape(binary: str) -> set[str]:
    """The series names in the /metrics of a server that saw a little traffic."""
    with tempfile.TemporaryDirectory() as data_dir:
        server = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--data-dir", data_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            addresses = None
            assert server.stdout is not None
            for line in server.stdout:
                event = json.loads(line)
                if event.get("event") == "listening":
                    addresses = event
                if event.get("event") == "ready":
                    break
            if addresses is None or addresses.get("metrics") is None:
                raise SystemExit(f"spool did not start with a metrics endpoint (exit code {server.poll()})")
            endpoint = f"http://{addresses['grpc']}"
            run(binary, "queue", "create", "monitored", endpoint=endpoint)
            run(binary, "send", "monitored", "one", endpoint=endpoint)
            run(binary, "send", "monitored", "later", "--delay", "60", endpoint=endpoint)
            run(binary, "receive", "monitored", "--max", "16", "--wait", "0", "--delete", endpoint=endpoint)
            # A refusal, so that spool_grpc_requests_total has a code other than OK.
            refused = run(binary, "queue", "get", "missing", endpoint=endpoint, check=False)
            if refused.returncode == 0:
                raise SystemExit("getting a missing queue succeeded")
            with urllib.request.urlopen(f"http://{addresses['metrics']}/metrics", timeout=10) as response:
                text = response.read().decode("utf-8")
        finally:
            server.terminate()
            server.wait(timeout=STARTUP_SECONDS)
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    files = sorted(path for path in HERE.iterdir() if path.suffix in {".json", ".yaml", ".yml"})
    spool, other = referenced(files)
    if not spool:
        raise SystemExit(f"no spool_* metric named in {', '.join(map(str, files))}")
    series = scrape(sys.argv[1])
    missing = sorted(name for name in spool if name not in series)
    unknown = sorted(name for name in other if name not in EXTERNAL)
    if missing or unknown:
        for name in missing:
            print(f"deploy/monitoring names {name}, which the server's /metrics does not have", file=sys.stderr)
        for name in unknown:
            print(f"deploy/monitoring names {name}, which is neither Spool's nor listed in EXTERNAL", file=sys.stderr)
        return 1
    print(f"ok: {len(spool)} Spool series named in deploy/monitoring exist; external: {', '.join(sorted(other))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
