"""The server of tests/sdk/python/conftest.py (one real Spool with its HTTP port), for the SQS
query-protocol tests, which run in their own venv (an older botocore: requirements.txt)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# The sibling directory's conftest, loaded under its own name (both files are "conftest").
_spec = importlib.util.spec_from_file_location(
    "spool_sdk_conftest", Path(__file__).resolve().parent.parent / "python" / "conftest.py"
)
_sibling = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _sibling  # dataclasses look their module up there
_spec.loader.exec_module(_sibling)
run_server = _sibling.run_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("spool-sqs-query")) as server:
        yield server


@pytest.fixture
def sqs(server):
    import boto3

    client = boto3.client(
        "sqs",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="spool",
        aws_secret_access_key="spool",
    )
    # The point of these tests: this botocore sends the query protocol, not JSON.
    assert client.meta.service_model.protocol == "query", client.meta.service_model.protocol
    return client
