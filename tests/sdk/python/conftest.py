"""One real Spool server with its HTTP port (--http-listen) for the SDK tests.

The binary is $SPOOL_BIN, else debug/spool in $CARGO_TARGET_DIR or <repo>/target. A SPOOL_BIN
that names no file fails; without either, the tests are skipped, except under CI=true, where
they fail. The server's addresses come from the machine-readable line it prints on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[3]
STARTUP_SECONDS = 30


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def server_binary() -> Path:
    given = os.environ.get("SPOOL_BIN")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"SPOOL_BIN is {given}, which is not a file", pytrace=False)
        return Path(given)
    binary = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug" / "spool"
    if not binary.is_file():
        reason = f"no spool binary at {binary}: run `cargo build`, or set SPOOL_BIN"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
        pytest.skip(reason)
    return binary


@dataclass
class Server:
    grpc: str
    http: str
    process: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://{self.http}"


@contextlib.contextmanager
def run_server(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[Server]:
    process = subprocess.Popen(
        [str(server_binary()), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", str(workdir / "data"), "--log-format", "json", *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=open(workdir / "spool.log", "w"),
        text=True,
    )
    events: dict = {}
    ready = threading.Event()

    def read_events() -> None:
        for line in process.stdout:
            event = json.loads(line)
            events[event["event"]] = event
            if event["event"] == "ready":
                ready.set()

    threading.Thread(target=read_events, daemon=True).start()
    try:
        if not ready.wait(STARTUP_SECONDS):
            pytest.fail(f"spool did not get ready: {(workdir / 'spool.log').read_text()}")
        listening = events["listening"]
        yield Server(listening["grpc"], listening["http"], process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("spool-sdk")) as server:
        yield server


@pytest.fixture
def sqs(server):
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="spool",
        aws_secret_access_key="spool",
    )


@pytest.fixture
def grpc(server):
    from spool_client import Client

    with Client(server.grpc) as client:
        yield client
