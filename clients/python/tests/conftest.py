"""Fixtures: one real Spool server for the session, started from the `spool` binary.

The binary is $SPOOL_BIN, else debug/spool in $CARGO_TARGET_DIR or <repo>/target (`cargo build`
makes it). A SPOOL_BIN that names no file fails every test that needs the server: whoever set it
meant that binary to be tested (scripts/test does). Without SPOOL_BIN and without the default
binary, those tests are skipped, unless CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

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


@contextlib.contextmanager
def run_server(
    workdir: Path,
    extra_args: Sequence[str] = (),
    probe: Callable[[str], Client] = Client,
) -> Iterator[Server]:
    """Runs `spool serve` on a free loopback port until the block ends; `probe(address)` makes
    the client that waits until it is ready (one with credentials, for a protected server)."""
    binary = server_binary()
    log_path = workdir / "spool.log"
    process = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--log-format", "json"]
        + ["--data-dir", str(workdir / "data")]
        + list(extra_args),
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
        with probe(address) as client:
            client.wait_until_ready(timeout=STARTUP_SECONDS)
        yield Server(address, process, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    with run_server(tmp_path_factory.mktemp("spool")) as server:
        yield server


#: The CMQ keys of the protected servers' principal: its token is "<secretId>:<secretKey>".
SECRET_ID = "AKIDspooltest"
SECRET_KEY = "cmq-secret-key"


def principals_file(path: Path) -> Path:
    """An auth file with one principal, "cmq-app", allowed everything on queues "cmq-*"."""
    token = f"{SECRET_ID}:{SECRET_KEY}"
    path.write_text(
        "[[principals]]\n"
        'name = "cmq-app"\n'
        f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        "[[principals.grants]]\n"
        'queues = "cmq-*"\n'
        'actions = ["send", "receive", "admin"]\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="session")
def protected_server(tmp_path_factory) -> Server:
    """A server with an auth file (plaintext, on loopback)."""
    workdir = tmp_path_factory.mktemp("spool-protected")
    auth_file = principals_file(workdir / "principals.toml")
    token = f"{SECRET_ID}:{SECRET_KEY}"
    with run_server(
        workdir,
        ["--auth-file", str(auth_file)],
        probe=lambda address: Client(address, token=token),
    ) as server:
        yield server


@dataclass
class TlsServer:
    server: Server
    ca_cert: Path

    @property
    def endpoint(self) -> str:
        return f"https://{self.server.address}"


def make_certificates(directory: Path) -> Path:
    """A CA, and a server certificate for 127.0.0.1 and localhost that it signs, made with the
    openssl command; returns the CA's certificate. tls.crt and tls.key are beside it."""
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl command is needed to make the TLS test's certificates")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=Spool test CA")
    openssl("req", *key, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost")
    (directory / "ext.cnf").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "extendedKeyUsage = serverAuth\n"
        "basicConstraints = CA:FALSE\n",
        encoding="utf-8",
    )
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")
    return directory / "ca.crt"


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory) -> TlsServer:
    """A server with TLS (a CA made for the test) and the auth file."""
    workdir = tmp_path_factory.mktemp("spool-tls")
    ca_cert = make_certificates(workdir)
    auth_file = principals_file(workdir / "principals.toml")
    token = f"{SECRET_ID}:{SECRET_KEY}"
    args = ["--tls-cert", str(workdir / "tls.crt"), "--tls-key", str(workdir / "tls.key")]
    with run_server(
        workdir,
        args + ["--auth-file", str(auth_file)],
        probe=lambda address: Client(f"https://{address}", ca_cert=ca_cert, token=token),
    ) as server:
        yield TlsServer(server, ca_cert)


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
