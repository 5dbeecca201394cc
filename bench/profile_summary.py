#!/usr/bin/env python3
"""Summarizes `perf script` output of a `perf record --call-graph dwarf` of the server (see
bench/profile.sh): the share of samples per thread kind, per part of the server, the writer's
breakdown, and the callers that allocate most. Plain text, no flamegraph tooling needed.

    python3 bench/profile_summary.py samples.txt
"""
import collections
import re
import sys

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.*?)(?:\s+\(.*\))?$")
MALLOC = ("malloc", "free", "unlink_chunk", "realloc", "memalign", "consolidate")
# Frames that only say "memory is being allocated"; the caller worth naming is above them.
ALLOC_PLUMBING = ("malloc", "free", "realloc", "__rust", "impl_runtime", "RawVec", "reserve",
                  "grow", "with_capacity", "alloc::", "allocate", "drop_in_place", "to_vec",
                  "clone", "extend", "append_elements", "push<", "format_inner", "fmt::")


def samples(path):
    """(thread name, frames innermost first) per sample."""
    for block in open(path, errors="replace").read().split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        thread = lines[0].split()[0]
        frames = []
        for line in lines[1:]:
            match = FRAME.match(line)
            if match:
                frames.append(re.sub(r"\+0x[0-9a-f]+$", "", match.group(1)))
        if frames:
            yield thread, frames


def part(thread, frames):
    joined = " | ".join(frames)
    if thread.startswith("spool-writer"):
        if "fsync" in joined or "fdatasync" in joined:
            return "writer: fsync"
        if "pagerWalFrames" in joined or "sqlite3PagerCommitPhaseOne" in joined:
            return "writer: WAL frame writes"
        if "writer::apply" in joined or "sqlite3_step" in joined:
            return "writer: statements"
        return "writer: other"
    if thread.startswith("spool-checkpoin"):
        return "checkpointer"
    if "read_bodies" in joined or "readers::read" in joined:
        return "body reads (blocking threads)"
    if any(name in frames[0] for name in MALLOC):
        return "malloc/free"
    if any(name in joined for name in ("writev", "sendmsg", "__libc_write")):
        return "socket writes"
    if any(name in joined for name in ("recvfrom", "recv ", "__libc_recv", "__libc_read")):
        return "socket reads"
    if "epoll_wait" in joined:
        return "epoll"
    if "futex" in joined or "unpark" in joined:
        return "wake-ups (futex)"
    if "QueueActor" in joined:
        return "queue actors"
    if "spool::grpc" in joined:
        return "gRPC handlers and delivery"
    if "h2::" in joined or "hyper::" in joined or "tonic" in joined:
        return "HTTP/2 and tonic"
    return "other"


def allocating_caller(frames):
    for frame in frames[1:]:
        if not any(word in frame for word in ALLOC_PLUMBING):
            return frame[:120]
    return "?"


def main():
    by_part = collections.Counter()
    by_thread = collections.Counter()
    allocators = collections.Counter()
    total = 0
    for thread, frames in samples(sys.argv[1]):
        total += 1
        by_thread[re.sub(r"[-0-9]+$", "", thread)] += 1
        by_part[part(thread, frames)] += 1
        if any(name in frames[0] for name in MALLOC):
            allocators[allocating_caller(frames)] += 1
    if total == 0:
        sys.exit("no samples")
    for title, counter, limit in (
        ("by thread", by_thread, 10),
        ("by part", by_part, 20),
        ("malloc/free, by caller", allocators, 12),
    ):
        print(f"--- {title} ({total} samples)")
        for name, count in counter.most_common(limit):
            print(f"{100 * count / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
