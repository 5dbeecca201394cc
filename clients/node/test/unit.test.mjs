// What needs no server: the error table against docs/api.md, decoding ErrorInfo from the
// status details, the retry rules and the backoff (as clients/rust/src/retry.rs tests them).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Metadata } from "@grpc/grpc-js";

import { ERROR_CASES, GrpcStatus, RetryPolicy, SpoolClient, SpoolError, codeName } from "../dist/index.js";
import { toSpoolError } from "../dist/errors.js";
import { ErrorInfoSchema } from "../dist/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../dist/gen/google/rpc/status_pb.js";

test("the error table is docs/api.md's, which is generated from clients/rust/src/errors.rs", () => {
  const doc = readFileSync(new URL("../../../docs/api.md", import.meta.url), "utf8");
  const rows = doc
    .split("\n")
    .filter((line) => /^\| `[A-Z_]+` \|/.test(line))
    .map((line) => line.split("|").map((cell) => cell.trim()));
  const documented = rows.map(([, reason, code, cmq]) => [reason.replaceAll("`", ""), code, Number(cmq)]);
  const ours = ERROR_CASES.map((entry) => [entry.reason, codeName(entry.grpcCode), entry.cmqCode]);
  assert.ok(documented.length >= 11, `docs/api.md has ${documented.length} error rows`);
  assert.deepEqual(ours, documented);
});

function statusWith(domain, reason, cmqCode) {
  const info = create(ErrorInfoSchema, { reason, domain, metadata: { cmq_code: cmqCode } });
  const status = create(StatusSchema, { code: 5, message: "gone", details: [anyPack(ErrorInfoSchema, info)] });
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return metadata;
}

test("reason and cmq_code come from Spool's ErrorInfo in grpc-status-details-bin", () => {
  const error = toSpoolError({ code: GrpcStatus.NOT_FOUND, details: "queue \"q\" does not exist", metadata: statusWith("spool", "QUEUE_NOT_FOUND", "4440") });
  assert.ok(error instanceof SpoolError);
  assert.equal(error.codeName, "NOT_FOUND");
  assert.equal(error.reason, "QUEUE_NOT_FOUND");
  assert.equal(error.cmqCode, 4440);
  assert.equal(error.errorCase?.cmqCode, 4440);
  assert.match(error.message, /^NOT_FOUND \(cmq_code 4440\): queue "q" does not exist$/);

  const foreign = toSpoolError({ code: GrpcStatus.NOT_FOUND, details: "x", metadata: statusWith("elsewhere", "QUEUE_NOT_FOUND", "4440") });
  assert.equal(foreign.reason, undefined, "an ErrorInfo of another domain is not Spool's");
  const bare = toSpoolError({ code: GrpcStatus.INTERNAL, details: "x", metadata: new Metadata() });
  assert.equal(bare.cmqCode, undefined);
  const garbage = new Metadata();
  garbage.set("grpc-status-details-bin", Buffer.from([0xff, 0xff, 0xff]));
  assert.equal(toSpoolError({ code: GrpcStatus.INTERNAL, details: "x", metadata: garbage }).reason, undefined);
});

const unavailable = (fields = {}) => new SpoolError({ code: GrpcStatus.UNAVAILABLE, details: "x", ...fields });

test("only UNAVAILABLE is retried, and only up to maxAttempts", () => {
  const policy = new RetryPolicy({ maxAttempts: 3 });
  assert.equal(policy.shouldRetry("idempotent", 1, unavailable()), true);
  assert.equal(policy.shouldRetry("idempotent", 2, unavailable()), true);
  assert.equal(policy.shouldRetry("idempotent", 3, unavailable()), false);
  for (const code of [GrpcStatus.NOT_FOUND, GrpcStatus.DEADLINE_EXCEEDED, GrpcStatus.INTERNAL, GrpcStatus.RESOURCE_EXHAUSTED]) {
    assert.equal(policy.shouldRetry("idempotent", 1, new SpoolError({ code, details: "x" })), false, codeName(code));
  }
  assert.equal(RetryPolicy.none().shouldRetry("idempotent", 1, unavailable()), false);
});

test("sends are retried only when never sent or refused while starting, unless opted in", () => {
  const policy = new RetryPolicy();
  const maybeStored = unavailable({ reason: "STORAGE_UNAVAILABLE", cmqCode: 6000 });
  assert.equal(policy.shouldRetry("not-idempotent", 1, maybeStored), false);
  assert.equal(policy.shouldRetry("not-idempotent", 1, unavailable({ neverSent: true })), true);
  assert.equal(policy.shouldRetry("not-idempotent", 1, unavailable({ reason: "STARTING", cmqCode: 6000 })), true);
  assert.equal(new RetryPolicy({ retryNonIdempotent: true }).shouldRetry("not-idempotent", 1, maybeStored), true);
});

test("the backoff doubles within its jitter and is capped", () => {
  const policy = new RetryPolicy({ initialBackoffMs: 100, maxBackoffMs: 1000 });
  for (const [attempt, ceiling] of [[1, 100], [2, 200], [3, 400], [4, 800], [5, 1000], [40, 1000]]) {
    assert.equal(policy.backoffMs(attempt, 0), ceiling / 2, `attempt ${attempt}`);
    assert.equal(policy.backoffMs(attempt, 1), ceiling, `attempt ${attempt}`);
    for (const random of [0.01, 0.5, 0.99]) {
      const wait = policy.backoffMs(attempt, random);
      assert.ok(wait >= ceiling / 2 && wait <= ceiling, `${attempt}: ${wait}`);
    }
  }
  assert.equal(new RetryPolicy({ initialBackoffMs: 0 }).backoffMs(3, 0.5), 0);
});

test("endpoints: host:port, http:// or https://; other schemes are refused", () => {
  new SpoolClient("127.0.0.1:50051").close();
  new SpoolClient("http://localhost:1").close();
  new SpoolClient("https://localhost:1").close();
  for (const bad of ["ftp://localhost:1", "http://", "http://a/b/c"]) {
    assert.throws(() => new SpoolClient(bad), TypeError, bad);
  }
});

test("TLS files need https:// and a client certificate its key; tokens must be printable", () => {
  assert.throws(() => new SpoolClient("http://127.0.0.1:1", { caCert: "-----BEGIN CERTIFICATE-----" }), /use https:\/\//);
  assert.throws(() => new SpoolClient("https://127.0.0.1:1", { clientCert: Buffer.from("pem") }), /go together/);
  assert.throws(() => new SpoolClient("https://127.0.0.1:1", { caCert: "/nonexistent/ca.crt" }), /caCert: cannot read \/nonexistent\/ca.crt/);
  for (const token of ["two words", "", "caf\u00e9"]) {
    assert.throws(() => new SpoolClient("127.0.0.1:1", { token }), /printable ASCII/, JSON.stringify(token));
  }
  new SpoolClient("127.0.0.1:1", { token: "AKID:key" }).close();
});
