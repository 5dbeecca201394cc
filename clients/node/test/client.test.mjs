// SpoolClient against a real `spool serve` (test/server.mjs): every call, the long-poll
// iterators, the errors' reason and cmq_code, and the retry of a send that never left.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { GrpcStatus, RetryPolicy, SpoolClient, SpoolError } from "../dist/index.js";
import { freePort, serverBinary, startServer } from "./server.mjs";

const found = serverBinary();
let server;
let client;
let counter = 0;
const queueName = (prefix = "node") => `${prefix}-${process.pid}-${++counter}`;
const text = (message) => new TextDecoder().decode(message.body);

/** The SpoolError a promise rejects with. */
async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SpoolError, `not a SpoolError: ${error}`);
    return error;
  }
  assert.fail("the call succeeded");
}

describe("against a real server", { skip: found.skip }, () => {
  before(async () => {
    server = await startServer(found.binary);
    client = new SpoolClient(server.endpoint);
  });
  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("queues: create (idempotent), get, update, list, delete", async () => {
    const name = queueName("lifecycle");
    const created = await client.createQueue(name, { visibilityTimeoutSeconds: 10, maxBacklog: 5n });
    assert.equal(created.name, name);
    assert.equal(created.attributes?.visibilityTimeoutSeconds, 10);
    assert.equal(created.attributes?.pollingWaitSeconds, 0, "defaults are filled in");
    assert.equal((await client.createQueue(name, { visibilityTimeoutSeconds: 10, maxBacklog: 5n })).name, name);

    const exists = await failure(client.createQueue(name, { visibilityTimeoutSeconds: 11 }));
    assert.deepEqual([exists.code, exists.reason, exists.cmqCode], [GrpcStatus.ALREADY_EXISTS, "QUEUE_EXISTS", 4460]);

    const updated = await client.updateQueue(name, { pollingWaitSeconds: 2 });
    assert.equal(updated.attributes?.pollingWaitSeconds, 2);
    assert.equal(updated.attributes?.visibilityTimeoutSeconds, 10, "unset attributes keep their value");
    assert.equal((await client.getQueue(name)).attributes?.pollingWaitSeconds, 2);

    const others = [queueName("lifecycle"), queueName("lifecycle")];
    for (const other of others) await client.createQueue(other);
    const page = await client.listQueues({ prefix: `lifecycle-${process.pid}-`, pageSize: 2 });
    assert.equal(page.queues.length, 2);
    assert.equal(page.totalCount, 3n);
    assert.notEqual(page.nextPageToken, "");
    const all = await client.listAllQueues(`lifecycle-${process.pid}-`);
    assert.deepEqual(all.map((queue) => queue.name), [name, ...others].sort());

    await client.deleteQueue(name);
    const gone = await failure(client.getQueue(name));
    assert.deepEqual([gone.code, gone.codeName, gone.reason, gone.cmqCode], [GrpcStatus.NOT_FOUND, "NOT_FOUND", "QUEUE_NOT_FOUND", 4440]);
    // A first attempt that finds no queue is the error it is (only a retry's NOT_FOUND is success).
    assert.equal((await failure(client.deleteQueue(name))).reason, "QUEUE_NOT_FOUND");
  });

  test("send, receive as an async iterator, delete; stale handles and bad arguments", async () => {
    const name = queueName();
    await client.createQueue(name);
    const id = await client.sendMessage(name, "hello");
    const ids = await client.batchSendMessages(name, ["one", new TextEncoder().encode("two"), { body: "later", delaySeconds: 600 }]);
    assert.equal(ids.length, 3);
    assert.ok(!ids.includes(id));

    const received = [];
    for await (const message of client.receiveMessages(name, { maxMessages: 16, waitSeconds: 1 })) received.push(message);
    assert.deepEqual(received.map(text), ["hello", "one", "two"], "the delayed one stays invisible");
    assert.equal(received[0].messageId, id);
    assert.equal(received[0].dequeueCount, 1);
    assert.ok(received[0].enqueueTime && received[0].nextVisibleTime);

    const stats = (await client.getQueue(name)).stats;
    assert.deepEqual([stats?.activeMessages, stats?.inactiveMessages, stats?.delayedMessages], [0n, 3n, 1n]);

    await client.deleteMessage(name, received[0].receiptHandle);
    await client.deleteMessage(name, received[0].receiptHandle); // a retried delete is OK
    const failures = await client.batchDeleteMessages(name, [received[1].receiptHandle, received[2].receiptHandle, "forged"]);
    assert.equal(failures.length, 1);
    assert.deepEqual([failures[0].receiptHandle, failures[0].code, failures[0].cmqCode], ["forged", GrpcStatus.INVALID_ARGUMENT, 4000]);

    const empty = await client.receive(name, { waitSeconds: 0 });
    assert.deepEqual(empty, [], "no message: OK and empty, not an error");

    const forged = await failure(client.deleteMessage(name, "not-a-handle"));
    assert.deepEqual([forged.code, forged.reason, forged.cmqCode], [GrpcStatus.INVALID_ARGUMENT, "INVALID_ARGUMENT", 4000]);
    const tooMany = await failure(client.receive(name, { maxMessages: 17 }));
    assert.equal(tooMany.cmqCode, 4000);
    const large = await failure(client.sendMessage(name, new Uint8Array(70_000)));
    assert.deepEqual([large.reason, large.cmqCode], ["TOO_LARGE", 4400]);
    const missing = await failure(client.receive(queueName("missing"), { waitSeconds: 0 }));
    assert.equal(missing.reason, "QUEUE_NOT_FOUND");
  });

  test("a long poll waits for the first message; messages() consumes until aborted", async () => {
    const name = queueName();
    await client.createQueue(name);
    const waiting = client.receive(name, { waitSeconds: 10 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await client.sendMessage(name, "awaited");
    assert.deepEqual((await waiting).map(text), ["awaited"]);

    const stop = new AbortController();
    const consumed = [];
    const sending = (async () => {
      for (const body of ["a", "b", "c"]) {
        await client.sendMessage(name, body);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    for await (const message of client.messages(name, { waitSeconds: 5, signal: stop.signal })) {
      consumed.push(text(message));
      await client.deleteMessage(name, message.receiptHandle);
      if (consumed.length === 3) stop.abort();
    }
    await sending;
    assert.deepEqual(consumed, ["a", "b", "c"]);

    // An abort while the poll waits ends the loop at once, without an error.
    const idle = new AbortController();
    const started = Date.now();
    setTimeout(() => idle.abort(), 200);
    for await (const message of client.messages(name, { waitSeconds: 20, signal: idle.signal })) {
      assert.fail(`nothing was sent, got ${text(message)}`);
    }
    assert.ok(Date.now() - started < 5000, "the abort ended the wait");
  });

  test("rewind brings deleted messages back; without a rewind window it is REWIND_DISABLED", async () => {
    const name = queueName();
    await client.createQueue(name, { rewindSeconds: 3600 });
    const start = new Date(Date.now() - 1000);
    await client.sendMessage(name, "replay me");
    const [message] = await client.receive(name);
    await client.deleteMessage(name, message.receiptHandle);
    assert.equal(await client.rewindQueue(name, start), 1n);
    const [again] = await client.receive(name);
    assert.deepEqual([text(again), again.dequeueCount], ["replay me", 2]);

    const plain = queueName();
    await client.createQueue(plain);
    const disabled = await failure(client.rewindQueue(plain, new Date()));
    assert.deepEqual([disabled.code, disabled.reason, disabled.cmqCode], [GrpcStatus.FAILED_PRECONDITION, "REWIND_DISABLED", 6050]);
  });

  test("visibility changes (heartbeat, nack, batch), peek and purge", async () => {
    const name = queueName();
    await client.createQueue(name);
    await client.batchSendMessages(name, ["a", "b"]);
    const peeked = await client.peekMessages(name, 16);
    assert.deepEqual(peeked.map((m) => [text(m), m.dequeueCount]), [["a", 0], ["b", 0]]);
    const [first, second] = await client.receive(name, { maxMessages: 2 });
    const extended = await client.changeMessageVisibility(name, first.receiptHandle, 600);
    assert.ok(Number(extended.seconds) > Date.now() / 1000 + 500);
    const answer = await client.batchChangeMessageVisibility(name, [
      { receiptHandle: second.receiptHandle, visibilityTimeoutSeconds: 0 },
      { receiptHandle: "bogus", visibilityTimeoutSeconds: 0 },
    ]);
    assert.deepEqual(answer.changed.map((c) => c.index), [0]);
    assert.deepEqual(answer.failures.map((f) => [f.index, f.cmqCode]), [[1, 4000]]);
    const stale = await failure(client.changeMessageVisibility(name, second.receiptHandle, 10));
    assert.deepEqual([stale.code, stale.cmqCode], [GrpcStatus.FAILED_PRECONDITION, 4430]);
    assert.deepEqual((await client.peekMessages(name)).map(text), ["b"]);
    assert.equal(await client.purgeQueue(name), 2n);
    assert.deepEqual(await client.peekMessages(name), []);
  });

  test("attributes, deduplication ids, dead-letter policies and redrive", async () => {
    const name = queueName();
    const dlq = `${name}-dlq`;
    await client.createQueue(dlq);
    await client.createQueue(name, {
      visibilityTimeoutSeconds: 1,
      deadLetterPolicy: { deadLetterQueue: dlq, maxReceiveCount: 1 },
    });
    assert.deepEqual(await client.listDeadLetterSourceQueues(dlq), [name]);
    const id = await client.sendMessage(name, "poison", { attributes: { k: "v" }, deduplicationId: "p-1" });
    assert.equal(await client.sendMessage(name, "poison again", { deduplicationId: "p-1" }), id);
    const ids = await client.batchSendMessages(name, [{ body: "dup", deduplicationId: "p-1" }]);
    assert.deepEqual(ids, [id]);
    const [first] = await client.receive(name);
    assert.deepEqual([text(first), first.attributes], ["poison", { k: "v" }]);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.deepEqual(await client.receive(name, { waitSeconds: 1 }), []);
    const [dead] = await client.receive(dlq, { waitSeconds: 5 });
    assert.deepEqual([dead.messageId, dead.deadLetterSourceQueue, dead.deadLetterReceiveCount], [id, name, 1]);
    await client.changeMessageVisibility(dlq, dead.receiptHandle, 0);
    const redriven = await client.redriveMessages(dlq);
    assert.deepEqual([redriven.redrivenMessages, redriven.skippedMessages], [1n, 0n]);
    const [back] = await client.peekMessages(name);
    assert.deepEqual([back.messageId, back.dequeueCount, back.deadLetterSourceQueue], [id, 0, ""]);
    const guarded = await failure(client.deleteQueue(dlq));
    assert.deepEqual([guarded.code, guarded.reason], [GrpcStatus.FAILED_PRECONDITION, "DEAD_LETTER_TARGET"]);
  });

  test("consume: pushes up to maxOutstandingMessages; acks are answered after the delete", async () => {
    const name = queueName("consume");
    await client.createQueue(name);
    for (const body of ["m1", "m2", "m3"]) await client.sendMessage(name, body);
    const stop = new AbortController();
    const stream = client.consume(name, { maxOutstandingMessages: 2, signal: stop.signal });
    const first = (await stream.next()).value;
    const second = (await stream.next()).value;
    assert.deepEqual([text(first.message), text(second.message)], ["m1", "m2"]);
    let stats = (await client.getQueue(name)).stats;
    assert.deepEqual([stats?.activeMessages, stats?.inactiveMessages], [1n, 2n], "no third before an ack");
    await Promise.all([first.ack(), second.ack()]);
    const third = (await stream.next()).value;
    assert.equal(text(third.message), "m3");
    stop.abort();
    assert.equal((await stream.next()).done, true, "an aborted stream ends without error");
    stats = (await client.getQueue(name)).stats;
    assert.deepEqual([stats?.activeMessages, stats?.inactiveMessages], [0n, 1n]);
    const missing = client.consume(queueName("missing"));
    const error = await failure(missing.next());
    assert.deepEqual([error.code, error.cmqCode], [GrpcStatus.NOT_FOUND, 4440]);
  });

  test("consume: nack redelivers at once; extend keeps the message past its timeout", async () => {
    const name = queueName("nack");
    await client.createQueue(name);
    await client.sendMessage(name, "m1");
    const stop = new AbortController();
    const stream = client.consume(name, { maxOutstandingMessages: 1, visibilityTimeoutSeconds: 1, signal: stop.signal });
    const first = (await stream.next()).value;
    await first.nack();
    const again = (await stream.next()).value;
    assert.deepEqual([text(again.message), again.message.dequeueCount], ["m1", 2]);
    const until = await again.extend(30);
    assert.ok(until.seconds >= again.message.nextVisibleTime.seconds + 20n, "extended");
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal((await client.getQueue(name)).stats?.inactiveMessages, 1n, "still in flight past its timeout");
    await again.ack();
    await client.sendMessage(name, "m2");
    const late = (await stream.next()).value;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const stale = await failure(late.extend(30));
    assert.equal(stale.cmqCode, 4430);
    assert.equal((await failure(late.nack())).cmqCode, 4430);
    stop.abort();
    // What was pushed before the abort (m2 again, after its timeout) is still yielded.
    while (!(await stream.next()).done);
  });

  test("a full backlog is BACKLOG_FULL (4410)", async () => {
    const name = queueName();
    await client.createQueue(name, { maxBacklog: 1n });
    await client.sendMessage(name, "fits");
    const full = await failure(client.sendMessage(name, "does not"));
    assert.deepEqual([full.code, full.reason, full.cmqCode], [GrpcStatus.RESOURCE_EXHAUSTED, "BACKLOG_FULL", 4410]);
  });
});

describe("retries", { skip: found.skip }, () => {
  test("a send that could not connect is retried, and lands once, when the server is back", async () => {
    const port = await freePort();
    const dataDir = mkdtempSync(join(tmpdir(), "spool-node-retry-"));
    const patient = new SpoolClient(`127.0.0.1:${port}`, {
      retry: new RetryPolicy({ maxAttempts: 60, initialBackoffMs: 50, maxBackoffMs: 250 }),
    });
    let back;
    try {
      const name = queueName("late");
      const first = await startServer(found.binary, { listen: `127.0.0.1:${port}`, dataDir });
      await patient.createQueue(name);
      await first.stop();
      // A send is not idempotent: it is retried only because these attempts cannot connect.
      const sending = patient.sendMessage(name, "once");
      await new Promise((resolve) => setTimeout(resolve, 300));
      back = await startServer(found.binary, { listen: `127.0.0.1:${port}`, dataDir });
      assert.ok(await sending);
      const received = await patient.receive(name, { maxMessages: 16 });
      assert.deepEqual(received.map(text), ["once"]);
    } finally {
      patient.close();
      await back?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("with nobody listening, calls fail UNAVAILABLE as never sent, after the policy's attempts", async () => {
    const port = await freePort();
    const attempts = 3;
    const policy = new RetryPolicy({ maxAttempts: attempts, initialBackoffMs: 20, maxBackoffMs: 40 });
    const nobody = new SpoolClient(`127.0.0.1:${port}`, { retry: policy });
    try {
      const started = Date.now();
      const error = await failure(nobody.sendMessage("q", "x"));
      assert.equal(error.code, GrpcStatus.UNAVAILABLE);
      assert.equal(error.neverSent, true);
      assert.match(error.message, new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}`));
      // Two backoffs of at least 10 and 20 ms were waited: it retried, and not forever.
      assert.ok(Date.now() - started >= 30, `${Date.now() - started} ms`);
    } finally {
      nobody.close();
    }
  });
});
