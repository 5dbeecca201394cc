#!/usr/bin/env python3
"""Generates the gRPC stubs in src/spool_client/pb/ from the repository's proto/ directory.

    python clients/python/generate.py           # rewrite the committed stubs
    python clients/python/generate.py --check   # exit 1 if they are stale

Needs grpcio-tools at the version pinned in requirements-dev.txt: another version writes other
code (and tests/test_generated.py then reports the stubs as stale).

grpcio-tools writes absolute imports (`from spool.v1 import queue_pb2`), which would need a
top-level `spool` package; the stubs live inside `spool_client.pb`, so that import is made
relative. Nothing else is changed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO_FILES = ["spool/v1/queue.proto"]
OUT_DIR = HERE / "src" / "spool_client" / "pb"
# What protoc writes for each proto file, next to the file's own path.
SUFFIXES = ["_pb2.py", "_pb2.pyi", "_pb2_grpc.py"]
ABSOLUTE_IMPORT = "from spool.v1 import "
RELATIVE_IMPORT = "from . import "


def generate() -> dict[str, bytes]:
    """Runs protoc on PROTO_FILES and returns {file name in pb/: contents}."""
    from grpc_tools import protoc  # imported here so --help works without grpcio-tools

    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed: {' '.join(args)}")
        files = {}
        for proto in PROTO_FILES:
            stem = proto.removesuffix(".proto")
            for suffix in SUFFIXES:
                text = (Path(tmp) / f"{stem}{suffix}").read_text(encoding="utf-8")
                text = text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
                files[Path(stem).name + suffix] = text.encode("utf-8")
        return files


def stale_files(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of the generated files in out_dir that are missing or differ from a fresh run."""
    stale = []
    for name, contents in generate().items():
        path = out_dir / name
        if not path.exists() or path.read_bytes() != contents:
            stale.append(name)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only check that the committed stubs are current"
    )
    options = parser.parse_args()
    if options.check:
        stale = stale_files()
        if stale:
            print(f"stale: {', '.join(stale)}; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        print("generated stubs are current")
        return 0
    for name, contents in generate().items():
        (OUT_DIR / name).write_bytes(contents)
        print(f"wrote {(OUT_DIR / name).relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
