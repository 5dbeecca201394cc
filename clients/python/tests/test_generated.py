"""The committed stubs in src/spool_client/pb/ are what generate.py makes from proto/ today."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

import pytest
from conftest import CLIENT_DIR, skip_or_fail


def load_generate():
    spec = importlib.util.spec_from_file_location("generate", CLIENT_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate():
    pinned = re.search(
        r"^grpcio-tools==(\S+)",
        (CLIENT_DIR / "requirements-dev.txt").read_text(encoding="utf-8"),
        re.MULTILINE,
    ).group(1)
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        skip_or_fail("grpcio-tools is not installed: pip install -r requirements-dev.txt")
    # Another version writes other code: comparing would report stale stubs that are not.
    assert installed == pinned, (
        f"grpcio-tools {installed} is installed, requirements-dev.txt pins {pinned}: "
        "pip install -r requirements-dev.txt"
    )
    return load_generate()


def test_committed_stubs_are_current(generate):
    stale = generate.stale_files()
    assert stale == [], (
        f"{stale} differ from what proto/ generates: run python clients/python/generate.py"
    )


def test_a_changed_stub_is_reported_stale(generate, tmp_path):
    files = generate.generate()
    for name, contents in files.items():
        (tmp_path / name).write_bytes(contents)
    assert generate.stale_files(tmp_path) == []
    (tmp_path / "queue_pb2.py").write_bytes(files["queue_pb2.py"] + b"# edited\n")
    (tmp_path / "queue_pb2_grpc.py").unlink()
    assert generate.stale_files(tmp_path) == ["queue_pb2.py", "queue_pb2_grpc.py"]


def test_stubs_import_inside_the_package():
    from spool_client.pb import queue_pb2, queue_pb2_grpc

    assert queue_pb2_grpc.QueueServiceStub
    assert queue_pb2.DESCRIPTOR.package == "spool.v1"
