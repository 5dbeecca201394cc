#!/usr/bin/env python3
"""Writes docs/api.md, the API reference, from the proto's comments and the error table.

    python3 scripts/api_doc.py           # rewrite docs/api.md
    python3 scripts/api_doc.py --check   # exit 1 if docs/api.md is not what it would write

The proto is read as buf compiles it (`buf build`, with its comments as source info), so this
script parses no protobuf syntax itself; buf comes from clients/node's pinned devDependencies
(`npm ci` there), or from --buf / $BUF. The error table comes from its one definition,
clients/rust/src/errors.rs (the README's and the proto header's tables are checked against it by
tests/it/error_table.rs), so a case added there makes docs/api.md stale until it is regenerated.
Needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_FILE = "spool/v1/queue.proto"
ERRORS_RS = ROOT / "clients" / "rust" / "src" / "errors.rs"
OUTPUT = ROOT / "docs" / "api.md"
DEFAULT_BUF = ROOT / "clients" / "node" / "node_modules" / ".bin" / "buf"

# Field numbers in google.protobuf.FileDescriptorProto and friends, for SourceCodeInfo paths.
FILE_MESSAGE_TYPE, FILE_SERVICE, FILE_SYNTAX = 4, 6, 12
MESSAGE_FIELD, SERVICE_METHOD = 2, 2

SCALAR_TYPES = {
    "TYPE_DOUBLE": "double",
    "TYPE_FLOAT": "float",
    "TYPE_INT64": "int64",
    "TYPE_UINT64": "uint64",
    "TYPE_INT32": "int32",
    "TYPE_FIXED64": "fixed64",
    "TYPE_FIXED32": "fixed32",
    "TYPE_BOOL": "bool",
    "TYPE_STRING": "string",
    "TYPE_BYTES": "bytes",
    "TYPE_UINT32": "uint32",
    "TYPE_SFIXED32": "sfixed32",
    "TYPE_SFIXED64": "sfixed64",
    "TYPE_SINT32": "sint32",
    "TYPE_SINT64": "sint64",
}

# tonic::Code variants as gRPC's canonical names (as spool_client::errors::code_name spells them).
GRPC_CODE_NAMES = {
    "InvalidArgument": "INVALID_ARGUMENT",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "PermissionDenied": "PERMISSION_DENIED",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "Aborted": "ABORTED",
    "OutOfRange": "OUT_OF_RANGE",
    "Unimplemented": "UNIMPLEMENTED",
    "Internal": "INTERNAL",
    "Unavailable": "UNAVAILABLE",
    "DataLoss": "DATA_LOSS",
    "Unauthenticated": "UNAUTHENTICATED",
    "Cancelled": "CANCELLED",
    "Unknown": "UNKNOWN",
    "DeadlineExceeded": "DEADLINE_EXCEEDED",
}


def build_image(buf: str) -> dict:
    """The proto compiled by buf: a FileDescriptorSet as JSON, comments included."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.json"
        subprocess.run([buf, "build", "-o", str(image)], cwd=ROOT, check=True)
        return json.loads(image.read_text(encoding="utf-8"))


def error_cases(source: str) -> list[dict[str, str]]:
    """The rows of ERROR_CASES in errors.rs, in its order."""
    consts = {}
    pattern = re.compile(
        r"pub const (\w+): ErrorCase = ErrorCase \{\s*"
        r'reason: "([^"]+)",\s*grpc_code: Code::(\w+),\s*cmq_code: (\d+),\s*'
        r'meaning: "((?:[^"\\]|\\.)*)",\s*\};'
    )
    for name, reason, code, cmq_code, meaning in pattern.findall(source):
        consts[name] = {
            "reason": reason,
            "grpc_code": GRPC_CODE_NAMES[code],
            "cmq_code": cmq_code,
            "meaning": meaning,
        }
    listed = re.search(r"pub const ERROR_CASES: \[ErrorCase; \d+\] = \[(.*?)\];", source, re.S)
    if not listed:
        raise SystemExit(f"{ERRORS_RS}: no ERROR_CASES array")
    names = re.findall(r"\w+", listed.group(1))
    missing = [name for name in names if name not in consts]
    if missing:
        # A case written in another shape than the others: teach the pattern rather than
        # silently leave it out of the docs.
        raise SystemExit(f"{ERRORS_RS}: cannot read the cases {', '.join(missing)}")
    return [consts[name] for name in names]


def comment(text: str | None) -> str:
    """A comment as markdown: protobuf keeps the space after `//`; drop it, keep the lines."""
    if not text:
        return ""
    lines = [line[1:] if line.startswith(" ") else line for line in text.rstrip("\n").split("\n")]
    return "\n".join(lines).strip("\n")


def one_line(text: str) -> str:
    """A comment for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def header_markdown(text: str) -> str:
    """The file's header comment: paragraphs as text, indented lines as a code block."""
    out: list[str] = []
    in_block = False
    for line in text.split("\n"):
        indented = line.startswith("  ")
        if indented and not in_block:
            out.append("```text")
            in_block = True
        elif not indented and in_block:
            out.append("```")
            in_block = False
        out.append(line)
    if in_block:
        out.append("```")
    return "\n".join(out)


def type_name(field: dict, package: str) -> str:
    if field["type"] in SCALAR_TYPES:
        return f"`{SCALAR_TYPES[field['type']]}`"
    name = field["typeName"].lstrip(".")
    if name.startswith(package + "."):
        short = name[len(package) + 1 :]
        return f"[`{short}`](#{short.lower()})"
    return f"`{name}`"


def message_link(name: str, package: str) -> str:
    name = name.lstrip(".")
    if name.startswith(package + "."):
        short = name[len(package) + 1 :]
        return f"[{short}](#{short.lower()})"
    return name


def render(image: dict, cases: list[dict[str, str]]) -> str:
    (proto,) = [f for f in image["file"] if f["name"] == PROTO_FILE]
    package = proto["package"]
    comments = {
        tuple(location.get("path", [])): location.get("leadingComments")
        for location in proto["sourceCodeInfo"]["location"]
    }
    out = [
        f"# API reference: `{package}`",
        "",
        "<!-- Generated by scripts/api_doc.py from proto/spool/v1/queue.proto and the error table",
        "     in clients/rust/src/errors.rs. Do not edit: change those and run",
        "     `python3 scripts/api_doc.py`; CI checks that this file is current. -->",
        "",
        f"The API of [`proto/{PROTO_FILE}`](../proto/{PROTO_FILE}), every call, message and",
        "field with the proto's own documentation, and the errors.",
        "",
        header_markdown(comment(comments.get((FILE_SYNTAX,)))),
        "",
        "## Errors",
        "",
        "Every error carries a `google.rpc.ErrorInfo` detail (in the `grpc-status-details-bin`",
        "trailer) with domain `spool`, the `reason` below, and CMQ's error number in the metadata",
        "key `cmq_code`.",
        "",
        "| reason | gRPC code | `cmq_code` | case |",
        "|---|---|---|---|",
    ]
    for case in cases:
        out.append(
            f"| `{case['reason']}` | {case['grpc_code']} | {case['cmq_code']} | "
            f"{one_line(case['meaning'])} |"
        )
    for s_index, service in enumerate(proto.get("service", [])):
        out += ["", f"## Service `{package}.{service['name']}`", ""]
        out.append(comment(comments.get((FILE_SERVICE, s_index))))
        for m_index, method in enumerate(service.get("method", [])):
            stream = "stream " if method.get("serverStreaming") else ""
            client_stream = "stream " if method.get("clientStreaming") else ""
            out += [
                "",
                f"### {method['name']}",
                "",
                f"`rpc {method['name']}({client_stream}{method['inputType'].lstrip('.')}) "
                f"returns ({stream}{method['outputType'].lstrip('.')})`",
                "",
                f"Request: {message_link(method['inputType'], package)}. "
                f"Response: {'a stream of ' if stream else ''}"
                f"{message_link(method['outputType'], package)}.",
                "",
                comment(comments.get((FILE_SERVICE, s_index, SERVICE_METHOD, m_index))),
            ]
    out += ["", "## Messages"]
    for m_index, message in enumerate(proto.get("messageType", [])):
        out += ["", f"### {message['name']}", ""]
        out.append(comment(comments.get((FILE_MESSAGE_TYPE, m_index))))
        out += ["", "| Field | Type | Number | Description |", "|---|---|---|---|"]
        for f_index, field in enumerate(message.get("field", [])):
            label = ""
            if field.get("proto3Optional"):
                label = "optional "
            elif field.get("label") == "LABEL_REPEATED":
                label = "repeated "
            text = comment(comments.get((FILE_MESSAGE_TYPE, m_index, MESSAGE_FIELD, f_index)))
            out.append(
                f"| `{field['name']}` | {label}{type_name(field, package)} | {field['number']} | "
                f"{one_line(text)} |"
            )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/api.md is current")
    parser.add_argument("--buf", default=os.environ.get("BUF", str(DEFAULT_BUF)), help="the buf binary")
    options = parser.parse_args()
    text = render(build_image(options.buf), error_cases(ERRORS_RS.read_text(encoding="utf-8")))
    if options.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is stale: run python3 scripts/api_doc.py",
                file=sys.stderr,
            )
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is current")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
