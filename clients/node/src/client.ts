// SpoolClient: a typed, promise-based method per call of spool.v1.QueueService over @grpc/grpc-js,
// with protobuf-es v2 messages, long-poll receives as async iterators, and the Rust client's
// retries (retry.ts).

import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";

import { SpoolError, toSpoolError } from "./errors.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  BatchSendEntrySchema,
  ChangeVisibilityEntrySchema,
  QueueAttributesSchema,
  QueueService,
  type BatchChangeMessageVisibilityResponse,
  type DeleteFailure,
  type ListQueuesResponse,
  type PeekedMessage,
  type Queue,
  type ReceivedMessage,
  type RedriveMessagesResponse,
  type ListSubscriptionsResponse,
  type ListTopicsResponse,
  type PublishMessageResponse,
  type Subscription,
  type Topic,
  FilterType,
} from "./gen/spool/v1/queue_pb.js";
import { RetryPolicy, type RetryOptions, type Safety } from "./retry.js";

/** The endpoint of a server started with `spool serve` and no `--listen`. */
export const DEFAULT_ENDPOINT = "http://127.0.0.1:50051";
/** How long connecting may take, unless the options say otherwise. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** How long a call other than a receive may take (a receive adds its wait to it). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
/** HTTP/2 pings while calls are open, so a long poll on a dead connection fails instead of hanging. */
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 20_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 10_000;
/** The longest polling wait a queue can have: a receive without wait_seconds may wait that long. */
const MAX_POLLING_WAIT_SECONDS = 30;
/** The server's request limit (16 bodies of 1 MiB plus 64 KiB): the largest legal batch fits. */
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 64 * 1024;

/** A message body: bytes, or a string sent as UTF-8. */
export type Body = Uint8Array | string;
/** Queue attributes to set; unset ones take their default (create) or stay (update). */
export type QueueAttributesInit = Omit<MessageInitShape<typeof QueueAttributesSchema>, "$typeName">;

/** Connection settings; every field is optional. */
export interface ClientOptions {
  /** How long connecting may take before an attempt fails, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** How long one attempt of a call may take, in ms (sent as grpc-timeout). Default 10000. */
  requestTimeoutMs?: number;
  /** HTTP/2 keepalive ping interval while calls are open, in ms; null turns pings off. Default 20000. */
  keepaliveIntervalMs?: number | null;
  /** How long a ping may go unanswered before the connection is dropped, in ms. Default 10000. */
  keepaliveTimeoutMs?: number;
  /** What is retried on UNAVAILABLE, and how (retry.ts). */
  retry?: RetryPolicy | RetryOptions;
  /**
   * Bearer token of a principal in the server's auth file (`--auth-file`), sent with every call
   * as `authorization: Bearer <token>`. Printable ASCII without spaces.
   */
  token?: string;
  /**
   * For an `https://` endpoint: the CA certificate(s) to trust instead of the system's roots.
   * PEM, as bytes, as text, or the path of a PEM file.
   */
  caCert?: Pem;
  /** For servers that require client certificates (mTLS): the certificate, with `clientKey`. */
  clientCert?: Pem;
  /** The private key of `clientCert`. */
  clientKey?: Pem;
}

/** PEM: bytes, text that starts with "-----BEGIN", or the path of a file holding it. */
export type Pem = Uint8Array | string;

/** Settings of a consumer stream (StreamMessages). */
export interface ConsumeOptions {
  /** Most messages delivered and not yet acknowledged (nor visible again), 1..1000. Unset: 100. */
  maxOutstandingMessages?: number;
  /** Seconds each delivered message stays invisible to others, 1..43200. Unset: the queue's. */
  visibilityTimeoutSeconds?: number;
  /** Ends the stream (the iteration ends without error). */
  signal?: AbortSignal;
}

/** A message pushed on a consumer stream. */
export interface Delivery {
  readonly message: ReceivedMessage;
  /**
   * Deletes the message: the acknowledgement goes out on the stream at once (with others of the
   * same tick, up to 16 a request); resolves when the server answers, after the delete is
   * durable, and rejects with the delete's SpoolError (4430: the handle expired).
   */
  ack(): Promise<void>;
  /**
   * Gives the message up: it becomes visible again at once (or after `delaySeconds`, 0..43200)
   * and is delivered again, its dequeueCount one higher. Batched on the stream as acks are;
   * resolves once the server answers, after the change is durable (the slot is free then), and
   * rejects with the SpoolError ChangeMessageVisibility would give (4430: the handle expired).
   * To let the message come back only after its visibility timeout, do nothing with it.
   */
  nack(delaySeconds?: number): Promise<void>;
  /**
   * Gives the consumer more time (a heartbeat): the message stays invisible to others for
   * `visibilityTimeoutSeconds` (1..43200) from now and keeps its slot until then. Resolves with
   * the new next_visible_time once the change is durable; the receipt handle is unchanged.
   */
  extend(visibilityTimeoutSeconds: number): Promise<Timestamp | undefined>;
}

/** Handles in one acknowledgement, nack or extension, at most (the server's limit). */
const MAX_ACK_BATCH = 16;

/** Settings of one ReceiveMessages call; unset ones take the queue's values. */
export interface ReceiveOptions {
  /** Most messages to receive, 1..16 (0 or unset: 1). Fewer visible messages do not block. */
  maxMessages?: number;
  /** Seconds to wait when no message is visible, 0..30. Unset: the queue's polling wait. */
  waitSeconds?: number;
  /** Seconds the received messages stay invisible, 1..43200. Unset: the queue's. */
  visibilityTimeoutSeconds?: number;
  /** Ends the receive (and a `messages()` loop) early. */
  signal?: AbortSignal;
}

/** One entry of a batch send. */
export interface BatchEntry {
  body: Body;
  /** Seconds before the message becomes visible. */
  delaySeconds?: number;
  /** Up to 16 attributes delivered with the message (counted toward max_message_size). */
  attributes?: Record<string, string>;
  /** 1..128 printable ASCII characters: a send with an id the queue accepted within its
   * deduplication window enqueues nothing and gets the first send's id. */
  deduplicationId?: string;
}

/** What sendMessage may say besides the body. */
export interface SendOptions {
  /** Seconds before the message becomes visible. */
  delaySeconds?: number;
  /** Up to 16 attributes delivered with the message (counted toward max_message_size). */
  attributes?: Record<string, string>;
  /** 1..128 printable ASCII characters: a send with an id the queue accepted within its
   * deduplication window enqueues nothing and resolves to the first send's id. */
  deduplicationId?: string;
}

type Methods = typeof QueueService.method;
type UnaryName = { [K in keyof Methods]: Methods[K]["methodKind"] extends "unary" ? K : never }[keyof Methods];
type Input<K extends keyof Methods> = MessageInitShape<Methods[K]["input"]>;
type Output<K extends keyof Methods> = MessageShape<Methods[K]["output"]>;

/** A failed call and how many attempts it took (DeleteQueue reads the count). */
class Failed extends Error {
  constructor(
    readonly error: SpoolError,
    readonly attempts: number,
  ) {
    super(error.message);
  }
}

/**
 * A connection to a Spool server with a typed, promise-based method per call. One client keeps
 * one HTTP/2 connection, which carries many calls at once; share it, and `close()` it at the end.
 *
 * ```ts
 * const client = new SpoolClient("http://127.0.0.1:50051");
 * await client.createQueue("orders", { visibilityTimeoutSeconds: 10 });
 * await client.sendMessage("orders", "order 1");
 * for await (const message of client.receiveMessages("orders", { maxMessages: 16, waitSeconds: 3 })) {
 *   await client.deleteMessage("orders", message.receiptHandle);
 * }
 * client.close();
 * ```
 */
export class SpoolClient {
  /** The endpoint as given, for error messages. */
  readonly endpoint: string;
  private readonly grpc: grpc.Client;
  private readonly retry: RetryPolicy;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  /** `Bearer <token>`, when the options give a token. */
  private readonly token: string | undefined;

  /**
   * Connects lazily, on the first call, to `endpoint`: `http://host:port` or `host:port`
   * (plaintext), or `https://host:port` (TLS; see `caCert`, `clientCert`, `clientKey`).
   */
  constructor(endpoint: string = DEFAULT_ENDPOINT, options: ClientOptions = {}) {
    this.endpoint = endpoint;
    this.retry = options.retry instanceof RetryPolicy ? options.retry : new RetryPolicy(options.retry);
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const keepalive = options.keepaliveIntervalMs === undefined ? DEFAULT_KEEPALIVE_INTERVAL_MS : options.keepaliveIntervalMs;
    const channelOptions: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // grpc-js reconnects on its own schedule (1 s, growing to 2 min by default); keep it within
      // the retry policy's, so that a retry finds a server that came back.
      "grpc.initial_reconnect_backoff_ms": Math.max(this.retry.initialBackoffMs, 1),
      "grpc.max_reconnect_backoff_ms": Math.max(this.retry.maxBackoffMs, 1),
    };
    if (keepalive !== null) {
      channelOptions["grpc.keepalive_time_ms"] = keepalive;
      channelOptions["grpc.keepalive_timeout_ms"] = options.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS;
    }
    const { authority, secure } = target(endpoint);
    this.token = bearer(options.token);
    this.grpc = new grpc.Client(authority, credentials(endpoint, secure, options), channelOptions);
  }

  /** The metadata of one call: the bearer token, if any (grpc-js may keep it, so one per call). */
  private metadata(): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.token !== undefined) metadata.set("authorization", this.token);
    return metadata;
  }

  /** Closes the connection; calls still open fail with CANCELLED. */
  close(): void {
    this.grpc.close();
  }

  /**
   * Creates a queue; unset attributes take their defaults. A queue that exists with the same
   * attributes is returned; with others, QUEUE_EXISTS. Retried on UNAVAILABLE.
   */
  async createQueue(name: string, attributes: QueueAttributesInit = {}): Promise<Queue> {
    return this.call("idempotent", "createQueue", { queueName: name, attributes });
  }

  /** A queue's attributes and message counters. Retried on UNAVAILABLE. */
  async getQueue(name: string): Promise<Queue> {
    return this.call("idempotent", "getQueue", { queueName: name });
  }

  /** Changes the attributes that are set; the others keep their value. Retried on UNAVAILABLE. */
  async updateQueue(name: string, attributes: QueueAttributesInit): Promise<Queue> {
    return this.call("idempotent", "updateQueue", { queueName: name, attributes });
  }

  /**
   * Deletes a queue and its messages. Retried on UNAVAILABLE; if a retry finds the queue gone, it
   * succeeds (the attempt that failed may have deleted it). NOT_FOUND on the first attempt throws.
   */
  async deleteQueue(name: string): Promise<void> {
    try {
      await this.attempts("idempotent", "deleteQueue", { queueName: name }, this.requestTimeoutMs);
    } catch (error) {
      if (error instanceof Failed && error.attempts > 1 && error.error.code === grpc.status.NOT_FOUND) return;
      throw error instanceof Failed ? error.error : error;
    }
  }

  /**
   * One page of queues whose name starts with `prefix`, in name order; `pageSize` 0 means 100;
   * `pageToken` is the previous page's `nextPageToken`. Retried on UNAVAILABLE.
   */
  async listQueues(options: { prefix?: string; pageSize?: number; pageToken?: string } = {}): Promise<ListQueuesResponse> {
    return this.call("idempotent", "listQueues", {
      prefix: options.prefix ?? "",
      pageSize: options.pageSize ?? 0,
      pageToken: options.pageToken ?? "",
    });
  }

  /** Every queue whose name starts with `prefix` ("" for all), page by page. */
  async listAllQueues(prefix = ""): Promise<Queue[]> {
    const queues: Queue[] = [];
    let pageToken = "";
    for (;;) {
      const page = await this.listQueues({ prefix, pageToken });
      queues.push(...page.queues);
      if (page.nextPageToken === "" || page.nextPageToken === pageToken) return queues;
      pageToken = page.nextPageToken;
    }
  }

  /**
   * Makes every deleted message enqueued at or after `start` receivable again; returns how many.
   * Not retried once the request may have reached the server, unless retryNonIdempotent.
   */
  async rewindQueue(name: string, start: Date): Promise<bigint> {
    const response = await this.call("not-idempotent", "rewindQueue", {
      queueName: name,
      startTime: timestampFromDate(start),
    });
    return response.restoredMessages;
  }

  /**
   * Sends one message; resolves to its id once it is stored durably. Not retried once the
   * request may have reached the server (a retry could store it twice), unless retryNonIdempotent.
   */
  async sendMessage(queue: string, body: Body, options: SendOptions = {}): Promise<string> {
    const response = await this.call("not-idempotent", "sendMessage", {
      queueName: queue,
      body: bytes(body),
      ...(options.delaySeconds === undefined ? {} : { delaySeconds: options.delaySeconds }),
      attributes: options.attributes ?? {},
      deduplicationId: options.deduplicationId ?? "",
    });
    return response.messageId;
  }

  /** Sends 1 to 16 messages, all or nothing; resolves to their ids in order. Retried as sendMessage. */
  async batchSendMessages(queue: string, entries: ReadonlyArray<Body | BatchEntry>): Promise<string[]> {
    const response = await this.call("not-idempotent", "batchSendMessages", {
      queueName: queue,
      entries: entries.map((entry) => {
        const { body, delaySeconds, attributes, deduplicationId }: BatchEntry =
          typeof entry === "string" || entry instanceof Uint8Array ? { body: entry } : entry;
        return create(BatchSendEntrySchema, {
          body: bytes(body),
          ...(delaySeconds === undefined ? {} : { delaySeconds }),
          attributes: attributes ?? {},
          deduplicationId: deduplicationId ?? "",
        });
      }),
    });
    return response.messageIds;
  }

  /**
   * One long poll, as an async iterator: up to `maxMessages` messages, at once if some are
   * visible, else the first to arrive within the wait; none when the wait ends empty. Opening it
   * is retried on UNAVAILABLE; once a message came, a broken stream throws. Leaving the loop
   * early cancels the call (messages already received stay in flight until their timeout).
   */
  async *receiveMessages(queue: string, options: ReceiveOptions = {}): AsyncGenerator<ReceivedMessage, void, undefined> {
    const request = create(QueueService.method.receiveMessages.input, {
      queueName: queue,
      maxMessages: options.maxMessages ?? 0,
      ...(options.waitSeconds === undefined ? {} : { waitSeconds: options.waitSeconds }),
      ...(options.visibilityTimeoutSeconds === undefined ? {} : { visibilityTimeoutSeconds: options.visibilityTimeoutSeconds }),
    });
    // The server ends the long poll just before the deadline it is given: leave it the whole wait.
    const timeoutMs = this.requestTimeoutMs + 1000 * (options.waitSeconds ?? MAX_POLLING_WAIT_SECONDS);
    const method = QueueService.method.receiveMessages;
    for (let attempt = 1; ; attempt++) {
      const deadline = Date.now() + timeoutMs;
      let delivered = false;
      try {
        await this.connected(Math.min(deadline, Date.now() + this.connectTimeoutMs));
        const call = this.grpc.makeServerStreamRequest(
          path(method.name),
          (message: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, message)),
          (buffer: Buffer) => fromBinary(method.output, buffer),
          request,
          this.metadata(),
          { deadline },
        );
        const abort = () => call.cancel();
        options.signal?.addEventListener("abort", abort, { once: true });
        try {
          for await (const message of call as AsyncIterable<ReceivedMessage>) {
            delivered = true;
            yield message;
          }
          return;
        } finally {
          options.signal?.removeEventListener("abort", abort);
          call.cancel(); // a no-op once the stream ended; frees it when the loop left early
        }
      } catch (caught) {
        const error = toSpoolError(caught);
        if (delivered || options.signal?.aborted || !this.retry.shouldRetry("idempotent", attempt, error)) throw error;
        await sleep(this.retry.backoffMs(attempt));
      }
    }
  }

  /**
   * A consumer stream (StreamMessages) as an async iterator of deliveries: messages are pushed
   * as they become visible while fewer than `maxOutstandingMessages` are unacknowledged. Answers
   * to acknowledgements are read as they come, whether or not the loop is waiting. The stream has
   * no deadline: it ends when the server shuts down or `options.signal` aborts, and throws if
   * the server refuses it (NOT_FOUND, ...) or the connection fails. Not retried. Leaving the loop
   * cancels it (messages delivered and not acknowledged come back after their timeout).
   *
   * ```ts
   * for await (const delivery of client.consume("orders", { maxOutstandingMessages: 10 })) {
   *   handle(delivery.message.body);
   *   await delivery.ack();
   * }
   * ```
   */
  async *consume(queue: string, options: ConsumeOptions = {}): AsyncGenerator<Delivery, void, undefined> {
    // What a request asks ("ack", or a nack or extension with its seconds), and who awaits it.
    type Kind = { case: "ack" } | { case: "nack" | "extend"; seconds: number };
    type Ack = { kind: Kind; handle: string; resolve: (time?: Timestamp) => void; reject: (error: SpoolError) => void };
    const method = QueueService.method.streamMessages;
    await this.connected(Date.now() + this.connectTimeoutMs);
    const call = this.grpc.makeBidiStreamRequest(
      path(method.name),
      (message: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, message)),
      (buffer: Buffer) => fromBinary(method.output, buffer),
      this.metadata(),
      {},
    );
    const arrived: (Delivery | SpoolError | null)[] = [];
    let wake: (() => void) | null = null;
    const push = (item: Delivery | SpoolError | null) => {
      arrived.push(item);
      wake?.();
      wake = null;
    };
    const answers = new Map<bigint, Ack[]>();
    let waiting: Ack[] = [];
    // One count for ackId, nackId and extendId.
    let nextRequestId = 1n;
    let ended = false;
    const endedError = () => new SpoolError({ code: grpc.status.CANCELLED, details: "the consumer stream has ended; the message comes back after its visibility timeout" });
    const failAll = () => {
      ended = true;
      for (const batch of answers.values()) for (const ack of batch) ack.reject(endedError());
      answers.clear();
      for (const ack of waiting) ack.reject(endedError());
      waiting = [];
    };
    const sameKind = (a: Kind, b: Kind) => a.case === b.case && (a.case === "ack" || (b.case !== "ack" && a.seconds === b.seconds));
    const flush = () => {
      for (let head = waiting[0]; head !== undefined && !ended; head = waiting[0]) {
        // Requests of the first one's kind, in order, up to 16: a request carries one kind.
        const kind = head.kind;
        const end = waiting.findIndex((ack, index) => index >= MAX_ACK_BATCH || !sameKind(ack.kind, kind));
        const count = end < 0 ? waiting.length : end;
        const batch = waiting.splice(0, count);
        const id = nextRequestId++;
        answers.set(id, batch);
        const receiptHandles = batch.map((ack) => ack.handle);
        if (kind.case === "ack") {
          call.write(create(method.input, { kind: { case: "acknowledge", value: { ackId: id, receiptHandles } } }));
        } else if (kind.case === "nack") {
          call.write(create(method.input, { kind: { case: "nack", value: { nackId: id, receiptHandles, delaySeconds: kind.seconds } } }));
        } else {
          call.write(create(method.input, { kind: { case: "extend", value: { extendId: id, receiptHandles, visibilityTimeoutSeconds: kind.seconds } } }));
        }
      }
    };
    const request = (kind: Kind, handle: string) =>
      new Promise<Timestamp | undefined>((resolve, reject) => {
        if (ended) return reject(endedError());
        if (waiting.length === 0) queueMicrotask(flush);
        waiting.push({ kind, handle, resolve, reject });
      });
    call.on("data", (response: MessageShape<typeof method.output>) => {
      if (response.kind.case === "message") {
        const message = response.kind.value;
        push({
          message,
          ack: async () => {
            await request({ case: "ack" }, message.receiptHandle);
          },
          nack: async (delaySeconds = 0) => {
            await request({ case: "nack", seconds: delaySeconds }, message.receiptHandle);
          },
          extend: (visibilityTimeoutSeconds: number) => request({ case: "extend", seconds: visibilityTimeoutSeconds }, message.receiptHandle),
        });
      } else if (response.kind.case === "acknowledged") {
        const answered = response.kind.value;
        const failures = new Map(answered.failures.map((failure) => [failure.receiptHandle, failure]));
        for (const ack of answers.get(answered.ackId) ?? []) {
          const failure = failures.get(ack.handle);
          if (failure === undefined) ack.resolve();
          else ack.reject(new SpoolError({ code: failure.code, details: failure.message, cmqCode: failure.cmqCode }));
        }
        answers.delete(answered.ackId);
      } else if (response.kind.case === "nacked" || response.kind.case === "extended") {
        const answered = response.kind.value;
        const batch = answers.get(answered.requestId) ?? [];
        answers.delete(answered.requestId);
        const changed = new Map(answered.changed.map((entry) => [entry.index, entry]));
        const failures = new Map(answered.failures.map((failure) => [failure.index, failure]));
        batch.forEach((ack, index) => {
          const entry = changed.get(index);
          const failure = failures.get(index);
          if (entry !== undefined) ack.resolve(entry.nextVisibleTime);
          else if (failure !== undefined) ack.reject(new SpoolError({ code: failure.code, details: failure.message, cmqCode: failure.cmqCode }));
          else ack.reject(new SpoolError({ code: grpc.status.INTERNAL, details: "the server's answer left this receipt handle out" }));
        });
      }
    });
    call.on("error", (error: unknown) => {
      failAll();
      push(options.signal?.aborted ? null : toSpoolError(error));
    });
    call.on("end", () => {
      failAll();
      push(null);
    });
    const abort = () => call.cancel();
    options.signal?.addEventListener("abort", abort, { once: true });
    call.write(create(method.input, {
      kind: {
        case: "start",
        value: {
          queueName: queue,
          maxOutstandingMessages: options.maxOutstandingMessages ?? 0,
          ...(options.visibilityTimeoutSeconds === undefined ? {} : { visibilityTimeoutSeconds: options.visibilityTimeoutSeconds }),
        },
      },
    }));
    try {
      for (;;) {
        if (arrived.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const item = arrived.shift();
        if (item === null || item === undefined) return;
        if (item instanceof SpoolError) throw item;
        yield item;
      }
    } finally {
      options.signal?.removeEventListener("abort", abort);
      call.cancel(); // a no-op once the stream ended; ends it when the loop left early
    }
  }

  /** One long poll, collected: the messages it received (possibly none). */
  async receive(queue: string, options: ReceiveOptions = {}): Promise<ReceivedMessage[]> {
    const messages: ReceivedMessage[] = [];
    for await (const message of this.receiveMessages(queue, options)) messages.push(message);
    return messages;
  }

  /**
   * Long polls one after another, for a consumer: yields every message received until
   * `options.signal` aborts (then it ends without error) or a call fails for good.
   * `waitSeconds` defaults to 30 here, so an idle queue costs one call per 30 s.
   *
   * ```ts
   * const stop = new AbortController();
   * for await (const message of client.messages("orders", { signal: stop.signal })) {
   *   handle(message.body);
   *   await client.deleteMessage("orders", message.receiptHandle);
   * }
   * ```
   */
  async *messages(queue: string, options: ReceiveOptions = {}): AsyncGenerator<ReceivedMessage, void, undefined> {
    const poll = { ...options, waitSeconds: options.waitSeconds ?? MAX_POLLING_WAIT_SECONDS };
    while (!options.signal?.aborted) {
      try {
        yield* this.receiveMessages(queue, poll);
      } catch (error) {
        if (options.signal?.aborted) return;
        throw error;
      }
    }
  }

  /** Deletes a received message by its newest receipt handle. Retried on UNAVAILABLE. */
  async deleteMessage(queue: string, receiptHandle: string): Promise<void> {
    await this.call("idempotent", "deleteMessage", { queueName: queue, receiptHandle });
  }

  /** Deletes 1 to 16 messages; resolves to the handles that could not be deleted. Retried on UNAVAILABLE. */
  async batchDeleteMessages(queue: string, receiptHandles: readonly string[]): Promise<DeleteFailure[]> {
    const response = await this.call("idempotent", "batchDeleteMessages", {
      queueName: queue,
      receiptHandles: [...receiptHandles],
    });
    return response.failures;
  }

  /**
   * Changes when a received message becomes visible again, `visibilityTimeoutSeconds` from now
   * (0..43200): 0 makes it visible at once (a nack), more extends the time to process it (a
   * heartbeat). The handle must be the newest and unexpired, as for deleteMessage; it stays valid
   * until the returned next_visible_time. Retried on UNAVAILABLE (a retried nack whose first
   * attempt took effect may then fail as a stale handle).
   */
  async changeMessageVisibility(queue: string, receiptHandle: string, visibilityTimeoutSeconds: number): Promise<Timestamp | undefined> {
    const response = await this.call("idempotent", "changeMessageVisibility", {
      queueName: queue,
      receiptHandle,
      visibilityTimeoutSeconds,
    });
    return response.nextVisibleTime;
  }

  /**
   * Changes the visibility of 1 to 16 messages, each as changeMessageVisibility does; resolves
   * to the entries that changed and those that did not, each by its index. Retried on UNAVAILABLE.
   */
  async batchChangeMessageVisibility(
    queue: string,
    entries: ReadonlyArray<{ receiptHandle: string; visibilityTimeoutSeconds: number }>,
  ): Promise<BatchChangeMessageVisibilityResponse> {
    return await this.call("idempotent", "batchChangeMessageVisibility", {
      queueName: queue,
      entries: entries.map((entry) => create(ChangeVisibilityEntrySchema, entry)),
    });
  }

  /**
   * Removes every visible, delayed and in-flight message (with a rewind window they stay
   * rewindable); resolves to how many. Not retried once the request may have reached the server
   * (a second purge removes what was sent in between), unless retryNonIdempotent.
   */
  async purgeQueue(queue: string): Promise<bigint> {
    const response = await this.call("not-idempotent", "purgeQueue", { queueName: queue });
    return response.purgedMessages;
  }

  /**
   * Up to `maxMessages` (1..16; default 1) visible messages in the order a receive would get
   * them, without receiving them: no receipt handle, nothing changes. Retried on UNAVAILABLE.
   */
  async peekMessages(queue: string, maxMessages = 1): Promise<PeekedMessage[]> {
    const response = await this.call("idempotent", "peekMessages", { queueName: queue, maxMessages });
    return response.messages;
  }

  /** The queues whose dead-letter policy names `queue`, in name order. Retried on UNAVAILABLE. */
  async listDeadLetterSourceQueues(queue: string): Promise<string[]> {
    const response = await this.call("idempotent", "listDeadLetterSourceQueues", { queueName: queue });
    return response.queueNames;
  }

  /**
   * Moves up to `maxMessages` (0, the default: all, up to 100000) visible messages out of a
   * dead-letter queue, oldest first: back to the queue each came from, or all to
   * `destinationQueue`. Not retried once the request may have reached the server (a second
   * redrive would also move what was dead-lettered in between), unless retryNonIdempotent.
   */
  async redriveMessages(
    queue: string,
    options: { destinationQueue?: string; maxMessages?: number } = {},
  ): Promise<RedriveMessagesResponse> {
    return this.call("not-idempotent", "redriveMessages", {
      queueName: queue,
      destinationQueue: options.destinationQueue ?? "",
      maxMessages: options.maxMessages ?? 0,
    });
  }

  /**
   * Creates a topic (publish once, a copy in every subscribed queue whose filter it passes);
   * `filterType` FilterType.TAGS (the default) or FilterType.ROUTING_KEYS. Creating one that
   * exists with the same attributes returns it.
   */
  async createTopic(
    topic: string,
    options: { maxMessageSize?: number; filterType?: FilterType } = {},
  ): Promise<Topic> {
    return this.call("idempotent", "createTopic", {
      topicName: topic,
      attributes: {
        maxMessageSize: options.maxMessageSize,
        filterType: options.filterType ?? FilterType.UNSPECIFIED,
      },
    });
  }

  /** A topic's attributes, subscription count and counters. */
  async getTopic(topic: string): Promise<Topic> {
    return this.call("idempotent", "getTopic", { topicName: topic });
  }

  /** Changes a topic's maxMessageSize (its filter type is fixed). */
  async updateTopic(topic: string, options: { maxMessageSize?: number } = {}): Promise<Topic> {
    return this.call("idempotent", "updateTopic", {
      topicName: topic,
      attributes: { maxMessageSize: options.maxMessageSize },
    });
  }

  /** Deletes a topic and its subscriptions (not their queues). */
  async deleteTopic(topic: string): Promise<void> {
    await this.call("idempotent", "deleteTopic", { topicName: topic });
  }

  /** One page of the topics whose name starts with `prefix`. */
  async listTopics(prefix = "", pageSize = 0, pageToken = ""): Promise<ListTopicsResponse> {
    return this.call("idempotent", "listTopics", { prefix, pageSize, pageToken });
  }

  /**
   * Subscribes a queue to a topic: filter tags (topics filtering by tags) or binding keys
   * (`*` one word, `#` zero or more; topics filtering by routing keys); none: every message.
   */
  async subscribe(
    topic: string,
    subscription: string,
    queue: string,
    options: { filterTags?: string[]; bindingKeys?: string[] } = {},
  ): Promise<Subscription> {
    return this.call("idempotent", "subscribe", {
      topicName: topic,
      subscriptionName: subscription,
      queueName: queue,
      filterTags: options.filterTags ?? [],
      bindingKeys: options.bindingKeys ?? [],
    });
  }

  /** Removes a subscription; the copies already in its queue stay. */
  async unsubscribe(topic: string, subscription: string): Promise<void> {
    await this.call("idempotent", "unsubscribe", { topicName: topic, subscriptionName: subscription });
  }

  /** One page of a topic's subscriptions, in name order. */
  async listSubscriptions(topic: string, pageSize = 0, pageToken = ""): Promise<ListSubscriptionsResponse> {
    return this.call("idempotent", "listSubscriptions", { topicName: topic, pageSize, pageToken });
  }

  /**
   * Publishes a message: a copy in every subscribed queue whose filter it passes, all in one
   * transaction. Retried on UNAVAILABLE only with a deduplication id (queues with
   * deduplication on then take no second copy).
   */
  async publishMessage(
    topic: string,
    body: Uint8Array | string,
    options: { tags?: string[]; routingKey?: string; attributes?: Record<string, string>; deduplicationId?: string } = {},
  ): Promise<PublishMessageResponse> {
    const deduplicationId = options.deduplicationId ?? "";
    return this.call(deduplicationId ? "idempotent" : "not-idempotent", "publishMessage", {
      topicName: topic,
      body: typeof body === "string" ? new TextEncoder().encode(body) : body,
      tags: options.tags ?? [],
      routingKey: options.routingKey ?? "",
      attributes: options.attributes ?? {},
      deduplicationId,
    });
  }

  private async call<K extends UnaryName>(safety: Safety, name: K, input: Input<K>): Promise<Output<K>> {
    try {
      return await this.attempts(safety, name, input, this.requestTimeoutMs);
    } catch (error) {
      throw error instanceof Failed ? error.error : error;
    }
  }

  /** A unary call, attempted as the retry policy allows; rejects with Failed. */
  private async attempts<K extends UnaryName>(safety: Safety, name: K, input: Input<K>, timeoutMs: number): Promise<Output<K>> {
    const method = QueueService.method[name];
    const request = create(method.input as DescMessage, input as MessageInitShape<DescMessage>);
    for (let attempt = 1; ; attempt++) {
      const deadline = Date.now() + timeoutMs;
      try {
        await this.connected(Math.min(deadline, Date.now() + this.connectTimeoutMs));
        return await new Promise<Output<K>>((resolve, reject) => {
          this.grpc.makeUnaryRequest(
            path(method.name),
            (message: MessageShape<DescMessage>) => Buffer.from(toBinary(method.input as DescMessage, message)),
            (buffer: Buffer) => fromBinary(method.output, buffer) as Output<K>,
            request,
            this.metadata(),
            { deadline },
            (error, response) => (error || response === undefined ? reject(error ?? new Error("no response")) : resolve(response)),
          );
        });
      } catch (caught) {
        const error = toSpoolError(caught);
        if (!this.retry.shouldRetry(safety, attempt, error)) throw new Failed(error, attempt);
        await sleep(this.retry.backoffMs(attempt));
      }
    }
  }

  /**
   * Resolves once the connection is up, or rejects with a SpoolError (UNAVAILABLE, neverSent)
   * when it fails or `deadline` passes first. A call starts only on a connection that is up, so a
   * call that fails after that may have reached the server; one that fails here certainly did not.
   * grpc-js reports no such distinction itself.
   */
  private connected(deadline: number): Promise<void> {
    const channel = this.grpc.getChannel();
    return new Promise((resolve, reject) => {
      const cannot = (why: string) =>
        reject(
          new SpoolError({
            code: grpc.status.UNAVAILABLE,
            details: `cannot connect to ${this.endpoint}: ${why}`,
            neverSent: true,
          }),
        );
      const check = () => {
        // `true`: an idle channel starts connecting.
        const state = channel.getConnectivityState(true);
        switch (state) {
          case grpc.connectivityState.READY:
            return resolve();
          case grpc.connectivityState.TRANSIENT_FAILURE:
            return cannot("the connection failed");
          case grpc.connectivityState.SHUTDOWN:
            return cannot("the client is closed");
          default:
            if (Date.now() >= deadline) return cannot("timed out");
            channel.watchConnectivityState(state, deadline, (error) => (error ? cannot("timed out") : check()));
        }
      };
      check();
    });
  }
}

/** grpc-js's target for an endpoint: `host:port`. Plaintext HTTP/2 only, as the Rust client. */
function target(endpoint: string): { authority: string; secure: boolean } {
  const match = /^(?:([a-z][a-z0-9+.-]*):\/\/)?([^/]+)\/?$/i.exec(endpoint);
  if (!match) throw new TypeError(`invalid endpoint ${JSON.stringify(endpoint)}: expected http://host:port or https://host:port`);
  const [, scheme, authority] = match;
  const lower = scheme?.toLowerCase();
  if (lower !== undefined && lower !== "http" && lower !== "https") {
    throw new TypeError(`invalid endpoint ${JSON.stringify(endpoint)}: use http:// (plaintext) or https:// (TLS)`);
  }
  if (authority === undefined || authority.startsWith(":")) {
    throw new TypeError(`invalid endpoint ${JSON.stringify(endpoint)}: it names no host`);
  }
  return { authority, secure: lower === "https" };
}

/** Plaintext, or TLS with the options' CA and client certificate; checks they fit together. */
function credentials(endpoint: string, secure: boolean, options: ClientOptions): grpc.ChannelCredentials {
  const given = [options.caCert, options.clientCert, options.clientKey].some((value) => value !== undefined);
  if (!secure) {
    if (given) throw new TypeError(`TLS files are given for ${endpoint}, which is plaintext: use https://`);
    return grpc.credentials.createInsecure();
  }
  if ((options.clientCert === undefined) !== (options.clientKey === undefined)) {
    throw new TypeError("clientCert and clientKey go together: give both, or neither");
  }
  return grpc.credentials.createSsl(
    pem(options.caCert, "caCert"),
    pem(options.clientKey, "clientKey"),
    pem(options.clientCert, "clientCert"),
  );
}

/** PEM bytes from bytes, PEM text, or a file path; null when not given. */
function pem(value: Pem | undefined, name: string): Buffer | null {
  if (value === undefined) return null;
  if (typeof value !== "string") return Buffer.from(value);
  if (value.trimStart().startsWith("-----BEGIN")) return Buffer.from(value);
  try {
    return readFileSync(value);
  } catch (error) {
    throw new TypeError(`${name}: cannot read ${value}: ${(error as Error).message}`);
  }
}

/** The authorization value of a token; a token that cannot travel in a header is refused here. */
function bearer(token: string | undefined): string | undefined {
  if (token === undefined) return undefined;
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError("the token is empty or not printable ASCII without spaces, so it cannot be sent");
  }
  return `Bearer ${token}`;
}

function path(method: string): string {
  return `/${QueueService.typeName}/${method}`;
}

function bytes(body: Body): Uint8Array {
  return typeof body === "string" ? new TextEncoder().encode(body) : body;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
