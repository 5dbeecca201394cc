#!/usr/bin/env python3
"""Runs the Dockerfile's build stage on the host, as written, since CI has no container engine.

    python3 .ci/dockerfile_check.py            # what .ci/run does
    python3 .ci/dockerfile_check.py --release  # the cargo line exactly as written (slow: a cold
                                               # release build of every dependency)

What it does, step by step as the build stage says:
- the build context: the repository's tracked files (a clean clone) minus what .dockerignore
  leaves out (Docker's rules: `**`, `*`, `?`, a leading `/`, `!` exceptions, a directory pattern
  excluding what is inside), copied into a temporary directory that stands for WORKDIR;
- COPY . . : that directory is the context; other COPY sources of the whole Dockerfile must be
  in the context (or come from a stage);
- each RUN line of the build stage, run by bash in that directory, with its `--mount` options
  dropped: the cache mount of /src/target is the repository's own target/ (symlinked, as the
  mount would be a directory that outlives the build), and absolute paths outside WORKDIR
  (/out) go to a temporary directory.
One thing differs unless --release is given: `cargo build --release` becomes the dev profile
(and target/release/ becomes target/debug/), so that the check reuses what `cargo test` compiled
instead of a cold release build of every dependency. Cargo.toml's [profile.release] is the only
part of the line that is then not exercised. ENV and ARG are not applied: the only one,
SPOOL_GIT_COMMIT, names the commit for `spool --version`, which the host build takes from git.
LABEL does nothing to the build. An instruction this script does not know in the
build stage fails the check, so a new step cannot be skipped silently.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {"FROM", "ARG", "WORKDIR", "COPY", "RUN", "ENV", "LABEL"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        result.append((keyword.upper(), rest.strip()))
        current = ""
    return result


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (is_exception, regex) in order; the last rule that matches wins."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().lstrip("/").rstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exception, re.compile(regex + r"\Z")))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for exception, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = not exception
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="store_true", help="run the cargo line exactly as written")
    options = parser.parse_args()

    steps = instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in steps:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    (build,) = [stage for stage in stages if re.search(r"\bAS\s+build\s*$", stage[0][1], re.I)]

    rules = ignore_rules((ROOT / ".dockerignore").read_text(encoding="utf-8"))
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    context = [path for path in tracked if path and not ignored(path, rules) and (ROOT / path).exists()]

    # Every COPY of the Dockerfile reads from the context, or from a stage (--from=...).
    for keyword, rest in steps:
        if keyword == "COPY" and "--from=" not in rest:
            *sources, _destination = [word for word in shlex.split(rest) if not word.startswith("--")]
            for source in sources:
                source = source.rstrip("/")
                if source != "." and not any(p == source or p.startswith(source + "/") for p in context):
                    raise SystemExit(f"Dockerfile: COPY {source}: not in the build context (.dockerignore?)")

    with tempfile.TemporaryDirectory(prefix="spool-dockerfile-") as scratch:
        workdir = Path(scratch) / "src"
        outside = Path(scratch) / "root"
        workdir_name = None
        for keyword, rest in build[1:]:
            if keyword not in KNOWN:
                raise SystemExit(f"Dockerfile build stage: {keyword} is not known to {Path(__file__).name}")
            if keyword == "WORKDIR":
                workdir_name = rest
            elif keyword == "COPY":
                if rest != ". .":
                    raise SystemExit(f"Dockerfile build stage: COPY {rest}: only `COPY . .` is known here")
                for path in context:
                    (workdir / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / path, workdir / path, follow_symlinks=False)
                print(f"context: {len(context)} files (git ls-files minus .dockerignore)")
            elif keyword == "RUN":
                if workdir_name is None:
                    raise SystemExit("Dockerfile build stage: RUN before WORKDIR")
                words = rest.split(" ")
                mounts = [word for word in words if word.startswith("--mount=")]
                command = " ".join(word for word in words if not word.startswith("--mount="))
                for mount in mounts:
                    target = re.search(r"target=([^,\s]+)", mount)
                    if target and target.group(1) == f"{workdir_name}/target":
                        (workdir / "target").symlink_to(ROOT / "target")
                # Absolute paths under WORKDIR are the context copy; others (/out) the scratch root.
                command = command.replace(f"{workdir_name}/", f"{workdir}/")
                command = re.sub(r"(?<![\w./-])/(?!usr/|bin/|tmp/)(\w)", f"{outside}/\\1", command)
                if not options.release:
                    command = command.replace("cargo build --release", "cargo build")
                    command = command.replace("target/release/", "target/debug/")
                print(f"RUN {command}", flush=True)
                subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, check=True)
        produced = outside / "out" / "spool"
        version = subprocess.run([str(produced), "--version"], capture_output=True, text=True, check=True)
        print(f"ok: the build stage produced {version.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
