"""examples/cmq_guide.py, the CMQ guide's code, runs against the server as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CLIENT_DIR

EXAMPLE = CLIENT_DIR / "examples" / "cmq_guide.py"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_cmq_guide_example(server, how):
    env = dict(os.environ)
    args = [sys.executable, str(EXAMPLE)]
    if how == "argument":
        env.pop("SPOOL_ENDPOINT", None)
        args.append(server.endpoint)
    else:
        env["SPOOL_ENDPOINT"] = server.endpoint
    # Run it twice: it cleans up after itself, so it can run again.
    for _ in range(2):
        result = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=120, cwd=CLIENT_DIR
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.rstrip().endswith("cmq_guide.py: ok"), result.stdout
