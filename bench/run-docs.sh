#!/usr/bin/env bash
# The runs behind docs/benchmarks.md: each workload 3 times against Spool and its peers
# (NATS JetStream, RabbitMQ, PostgreSQL on 127.0.0.1), JSON reports into $OUT (default
# bench-results/). Starts its own release `spool serve` on 127.0.0.1:50051 with a fresh data
# directory. 15 to 25 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-bench-results}"
RUNS="${RUNS:-3}"
mkdir -p "$OUT"
cargo build --release --workspace
DATA="$(mktemp -d "${TMPDIR:-/tmp}/spool-bench-data.XXXXXX")"
target/release/spool serve --listen 127.0.0.1:50051 --data-dir "$DATA" --log warn &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
sleep 1

bench() { # NAME ARGS...: one workload, every target, $RUNS runs
  local name=$1
  shift
  echo "--- $name: $*" >&2
  target/release/spool-bench --runs "$RUNS" --json "$@" >"$OUT/$name.json"
}

# 10,000 parked long polls, 100 sends/s (Spool only). First, on the fresh server: memory per
# waiter is only meaningful in the first run (later runs reuse memory the allocator kept).
bench idle-10k --targets spool --mode idle -W 10000 -N 1000 --rate 100 --max-seconds 60
# Steady: 4 producers + 4 consumers, 256 B, batch 16, as fast as acks come back. grpc-relay
# (Spool's API served by a relay that stores nothing) is the transport's ceiling.
bench steady --targets spool,relay,durable-relay,nats,rabbitmq,postgres -N 300000 --max-seconds 120
# Fill 1M, then drain (Spool and NATS at 1M; RabbitMQ and PostgreSQL at 200k to keep it short).
bench fill-drain-1m --targets spool,relay,durable-relay,nats --mode fill-drain -N 1000000 --max-seconds 300
bench fill-drain-200k --targets rabbitmq,postgres --mode fill-drain -N 200000 --max-seconds 300
# 5,000 msg/s offered.
bench rate-5000 --targets spool,durable-relay,nats,rabbitmq,postgres -N 50000 --rate 5000 --max-seconds 60
# The transport alone: gRPC health checks, 4 callers, and 64 callers.
bench echo --targets spool --mode echo -P 4 -N 100000
bench echo-64 --targets spool --mode echo -P 64 -N 200000
