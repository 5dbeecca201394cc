// When a failed call is tried again, and how long the client waits before it does: the rules
// of the Rust client (clients/rust/src/retry.rs), which explains them at length.
//
// Only UNAVAILABLE is retried: the server could not be reached, is shutting down, or its storage
// failed.
// - Safe (retried): GetQueue and ListQueues read; CreateQueue is idempotent by design; UpdateQueue
//   sets absolute values; DeleteMessage and BatchDeleteMessages succeed again on a message they
//   deleted; DeleteQueue too (a retry that finds the queue gone reports success); PeekMessages
//   reads; ChangeMessageVisibility and its batch set a time from now again.
// - Not idempotent (retried only when the request certainly was not carried out: the client
//   could not connect, or the server refused it while STARTING; or with retryNonIdempotent):
//   SendMessage, BatchSendMessages (a retry could store a duplicate), RewindQueue (a second
//   rewind brings back what consumers deleted in between) and PurgeQueue (a second purge removes
//   what was sent in between).
// - ReceiveMessages: opening it is retried like a safe call (messages of a lost answer come back
//   after their visibility timeout); a stream that already delivered a message never is.

import { status as GrpcStatus } from "@grpc/grpc-js";

import type { SpoolError } from "./errors.js";

/** Whether sending a call twice has the effect of sending it once. */
export type Safety = "idempotent" | "not-idempotent";

/** Attempts in all unless said otherwise: about 1.5 s of retrying in the worst case. */
export const DEFAULT_MAX_ATTEMPTS = 5;
export const DEFAULT_INITIAL_BACKOFF_MS = 100;
export const DEFAULT_MAX_BACKOFF_MS = 2000;

/** How calls that fail with UNAVAILABLE are retried; every field is optional. */
export interface RetryOptions {
  /** Attempts in all, the first included; 1 means no retry. Default 5. */
  maxAttempts?: number;
  /** The backoff before the first retry, in ms; it doubles for each retry after. Default 100. */
  initialBackoffMs?: number;
  /** The backoff never grows beyond this, in ms. Default 2000. */
  maxBackoffMs?: number;
  /**
   * Also retry SendMessage, BatchSendMessages and RewindQueue when their request may have
   * reached the server, accepting duplicates. Default false.
   */
  retryNonIdempotent?: boolean;
}

/** Retries of calls that fail with UNAVAILABLE: exponential backoff with jitter, bounded. */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly retryNonIdempotent: boolean;

  constructor(options: RetryOptions = {}) {
    this.maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
    this.initialBackoffMs = Math.max(0, options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS);
    this.maxBackoffMs = Math.max(0, options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS);
    this.retryNonIdempotent = options.retryNonIdempotent ?? false;
  }

  /** One attempt, never a retry. */
  static none(): RetryPolicy {
    return new RetryPolicy({ maxAttempts: 1 });
  }

  /** Whether attempt number `attempt` (1 for the first) that failed with `error` is followed by another. */
  shouldRetry(safety: Safety, attempt: number, error: SpoolError): boolean {
    if (attempt >= this.maxAttempts || error.code !== GrpcStatus.UNAVAILABLE) return false;
    return safety === "idempotent" || this.retryNonIdempotent || notCarriedOut(error);
  }

  /**
   * How long to wait after attempt number `attempt` failed, in ms: drawn with `random` (in
   * [0, 1)) between half and all of `initial × 2^(attempt−1)`, capped at the maximum. The
   * jitter keeps clients that failed together from retrying together.
   */
  backoffMs(attempt: number, random: number = Math.random()): number {
    const doublings = Math.min(Math.max(attempt - 1, 0), 31);
    const ceiling = Math.min(this.initialBackoffMs * 2 ** doublings, this.maxBackoffMs);
    const half = ceiling / 2;
    return half + (ceiling - half) * Math.min(Math.max(random, 0), 1);
  }
}

/**
 * Whether a failed call certainly did nothing, so that it may be sent again whatever it is: it
 * never reached the server, or the server refused it while starting (before it serves a queue).
 */
export function notCarriedOut(error: SpoolError): boolean {
  // `reason` is set only from an ErrorInfo of Spool's domain (errors.ts).
  return error.neverSent || (error.code === GrpcStatus.UNAVAILABLE && error.reason === "STARTING");
}
