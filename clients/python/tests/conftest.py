"""Fixtures: one real Spool server for the session, started from the `spool` binary.

The binary is $SPOOL_BIN, else debug/spool in $CARGO_TARGET_DIR or <repo>/target (`cargo build`
makes it). A SPOOL_BIN that names no file fails every test that needs the server: whoever set it
meant that binary to be tested (scripts/test does). Without SPOOL_BIN and without the default
binary, those tests are skipped, unless CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from spool_client import Client
from spool_client.cmq import Account

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO = CLIENT_DIR.parent.parent
# How long the server may take to say where it listens, and then to accept a connection.
STARTUP_SECONDS = 30


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def skip_or_fail(reason: str) -> None:
    """Skips a test for a missing prerequisite, except in CI, where nothing may be missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    """The running server: its address as "host:port", and its process and log."""

    address: str
    process: subprocess.Popen
    log_path: Path

    @property
    def endpoint(self) -> str:
        """The address as CMQ's SDK writes endpoints."""
        return f"http://{self.address}"


def _listening_address(line: str):
    """The address in the server's "listening" log line (JSON), else None."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    fields = event.get("fields", {}) if isinstance(event, dict) else {}
    return fields.get("addr") if fields.get("message") == "listening" else None


def server_binary() -> Path:
    """The spool binary to start; fails or skips (see the module's doc) when there is none."""
    given = os.environ.get("SPOOL_BIN")
    if given:
        binary = Path(given)
        if not binary.is_file():
            pytest.fail(f"SPOOL_BIN is {given}, which is not a file", pytrace=False)
        return binary
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    binary = target / "debug" / "spool"
    if not binary.is_file():
        skip_or_fail(f"no spool binary at {binary}: run `cargo build`, or set SPOOL_BIN")
    return binary


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = server_binary()
    workdir = tmp_path_factory.mktemp("spool")
    log_path = workdir / "spool.log"
    process = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--log-format", "json"]
        + ["--data-dir", str(workdir / "data")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # A thread copies the log to a file (so the pipe never fills) and hands over the address.
    addresses: "queue.Queue[str]" = queue.Queue()

    def copy_log() -> None:
        with open(log_path, "w", encoding="utf-8") as log:
            for line in process.stderr:
                log.write(line)
                log.flush()
                address = _listening_address(line)
                if address:
                    addresses.put(address)

    threading.Thread(target=copy_log, name="spool-log", daemon=True).start()
    try:
        try:
            address = addresses.get(timeout=STARTUP_SECONDS)
        except queue.Empty:
            log = log_path.read_text(encoding="utf-8") if log_path.exists() else ""
            pytest.fail(f"spool did not start listening (exit code {process.poll()}):\n{log}")
        with Client(address) as probe:
            probe.wait_until_ready(timeout=STARTUP_SECONDS)
        yield Server(address, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def client(server: Server) -> Client:
    with Client(server.address) as client:
        yield client


@pytest.fixture(scope="session")
def account(server: Server) -> Account:
    with Account(server.endpoint, "secret-id", "secret-key") as account:
        yield account


@pytest.fixture
def queue_name() -> str:
    """A name no other test uses (the tests share one server)."""
    return "t" + uuid.uuid4().hex[:16]


@pytest.fixture
def closed_address() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % sock.getsockname()[1]
