// The AWS SDK for JavaScript v3 (@aws-sdk/client-sqs), unchanged, against Spool's SQS JSON API:
// a send/receive/delete round trip. The SDK checks MD5OfMessageBody itself (its md5 middleware)
// and fails the call when it does not match.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import {
  SQSClient, CreateQueueCommand, SendMessageCommand, ReceiveMessageCommand,
  DeleteMessageCommand, GetQueueAttributesCommand,
} from "@aws-sdk/client-sqs";

const inCi = ["true", "1"].includes((process.env.CI ?? "").toLowerCase());
const binary = process.env.SPOOL_BIN ?? resolve(import.meta.dirname, "../../../target/debug/spool");

async function startServer() {
  const dataDir = mkdtempSync(join(tmpdir(), "spool-sdk-node-"));
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
    "--data-dir", join(dataDir, "data")], { stdio: ["ignore", "pipe", "ignore"] });
  const lines = createInterface({ input: child.stdout });
  let http;
  for await (const line of lines) {
    const event = JSON.parse(line);
    if (event.event === "listening") http = event.http;
    if (event.event === "ready") break;
  }
  return { http, stop: () => { child.kill("SIGTERM"); rmSync(dataDir, { recursive: true, force: true }); } };
}

test("send, receive and delete through @aws-sdk/client-sqs", async (t) => {
  if (!existsSync(binary)) {
    if (inCi || process.env.SPOOL_BIN) assert.fail(`no spool binary at ${binary}`);
    t.skip(`no spool binary at ${binary}: run cargo build, or set SPOOL_BIN`);
    return;
  }
  const server = await startServer();
  after(server.stop);
  const sqs = new SQSClient({
    endpoint: `http://${server.http}`, region: "us-east-1",
    credentials: { accessKeyId: "spool", secretAccessKey: "spool" },
  });
  const name = `js-${Date.now()}`;
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name }));
  assert.equal(QueueUrl, `http://${server.http}/000000000000/${name}`);
  const attributes = {
    trace: { DataType: "String", StringValue: "00-abc-01" },
    blob: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 254, 255]) },
  };
  const sent = await sqs.send(new SendMessageCommand({
    QueueUrl, MessageBody: "hello from js ✓", MessageAttributes: attributes,
  }));
  assert.ok(sent.MD5OfMessageAttributes);
  const { Messages } = await sqs.send(new ReceiveMessageCommand({
    QueueUrl, WaitTimeSeconds: 5, MessageSystemAttributeNames: ["ApproximateReceiveCount"],
    MessageAttributeNames: ["All"],
  }));
  assert.deepEqual(Messages[0].MessageAttributes, attributes);
  assert.equal(Messages[0].MD5OfMessageAttributes, sent.MD5OfMessageAttributes);
  assert.equal(Messages.length, 1);
  assert.equal(Messages[0].MessageId, sent.MessageId);
  assert.equal(Messages[0].Body, "hello from js ✓");
  assert.equal(Messages[0].Attributes.ApproximateReceiveCount, "1");
  await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: Messages[0].ReceiptHandle }));
  const { Attributes } = await sqs.send(new GetQueueAttributesCommand({
    QueueUrl, AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
  }));
  assert.deepEqual(Attributes, { ApproximateNumberOfMessages: "0", ApproximateNumberOfMessagesNotVisible: "0" });
  sqs.destroy();
});
