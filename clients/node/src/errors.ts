// Spool's error table and the error a failed call throws. The table mirrors its one definition,
// clients/rust/src/errors.rs (test/errors.test.mjs checks it against docs/api.md, which is
// generated from there).

import { fromBinary } from "@bufbuild/protobuf";
import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";

/** google.rpc.ErrorInfo.domain of every error Spool reports. */
export const ERROR_DOMAIN = "spool";
/** The ErrorInfo metadata key that holds CMQ's error number, in decimal. */
export const CMQ_CODE_KEY = "cmq_code";
/** The trailer that carries a google.rpc.Status with the error's details. */
const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";

/** One row of the error table. */
export interface ErrorCase {
  /** google.rpc.ErrorInfo.reason: the case's name, for programs. */
  readonly reason: string;
  /** The gRPC status code. */
  readonly grpcCode: GrpcStatus;
  /** CMQ's error number. */
  readonly cmqCode: number;
}

/** Every case, in the order of the README's table. */
export const ERROR_CASES: readonly ErrorCase[] = [
  { reason: "INVALID_ARGUMENT", grpcCode: GrpcStatus.INVALID_ARGUMENT, cmqCode: 4000 },
  { reason: "TOO_LARGE", grpcCode: GrpcStatus.INVALID_ARGUMENT, cmqCode: 4400 },
  { reason: "QUEUE_NOT_FOUND", grpcCode: GrpcStatus.NOT_FOUND, cmqCode: 4440 },
  { reason: "QUEUE_EXISTS", grpcCode: GrpcStatus.ALREADY_EXISTS, cmqCode: 4460 },
  { reason: "RECEIPT_HANDLE_STALE", grpcCode: GrpcStatus.FAILED_PRECONDITION, cmqCode: 4430 },
  { reason: "REWIND_DISABLED", grpcCode: GrpcStatus.FAILED_PRECONDITION, cmqCode: 6050 },
  { reason: "DEAD_LETTER_TARGET", grpcCode: GrpcStatus.FAILED_PRECONDITION, cmqCode: 4000 },
  { reason: "BACKLOG_FULL", grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, cmqCode: 4410 },
  { reason: "TOO_MANY_QUEUES", grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, cmqCode: 4450 },
  { reason: "SERVER_BUSY", grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, cmqCode: 4420 },
  { reason: "TOPIC_NOT_FOUND", grpcCode: GrpcStatus.NOT_FOUND, cmqCode: 4440 },
  { reason: "TOPIC_EXISTS", grpcCode: GrpcStatus.ALREADY_EXISTS, cmqCode: 4460 },
  { reason: "TOO_MANY_TOPICS", grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, cmqCode: 4450 },
  { reason: "UNAUTHENTICATED", grpcCode: GrpcStatus.UNAUTHENTICATED, cmqCode: 4100 },
  { reason: "PERMISSION_DENIED", grpcCode: GrpcStatus.PERMISSION_DENIED, cmqCode: 4101 },
  { reason: "STORAGE_UNAVAILABLE", grpcCode: GrpcStatus.UNAVAILABLE, cmqCode: 6000 },
  { reason: "STARTING", grpcCode: GrpcStatus.UNAVAILABLE, cmqCode: 6000 },
  { reason: "SHUTTING_DOWN", grpcCode: GrpcStatus.UNAVAILABLE, cmqCode: 6000 },
];

/** The canonical name of a gRPC code (`NOT_FOUND`), as the error table spells it. */
export function codeName(code: number): string {
  return GrpcStatus[code] ?? `CODE_${code}`;
}

/**
 * A call that failed: the gRPC code, and when the server said so (every error Spool itself
 * reports), the reason and CMQ's error number from the google.rpc.ErrorInfo detail.
 *
 * ```ts
 * try {
 *   await client.getQueue("nope");
 * } catch (error) {
 *   if (error instanceof SpoolError && error.reason === "QUEUE_NOT_FOUND") { ... }
 * }
 * ```
 */
export class SpoolError extends Error {
  /** The gRPC status code (`@grpc/grpc-js`'s `status`). */
  readonly code: GrpcStatus;
  /** The code's canonical name, e.g. "NOT_FOUND". */
  readonly codeName: string;
  /** ErrorInfo.reason ("QUEUE_NOT_FOUND", ...); undefined when the error did not come from Spool. */
  readonly reason: string | undefined;
  /** CMQ's error number (4440, ...); undefined when the error did not come from Spool. */
  readonly cmqCode: number | undefined;
  /** The server's (or the transport's) message, without the code. */
  readonly details: string;
  /**
   * True when the request certainly never reached the server (it could not connect), so that
   * even a send may be sent again.
   */
  readonly neverSent: boolean;

  constructor(fields: {
    code: GrpcStatus;
    details: string;
    reason?: string | undefined;
    cmqCode?: number | undefined;
    neverSent?: boolean;
  }) {
    const name = codeName(fields.code);
    const cmq = fields.cmqCode === undefined ? "" : ` (cmq_code ${fields.cmqCode})`;
    super(`${name}${cmq}: ${fields.details}`);
    this.name = "SpoolError";
    this.code = fields.code;
    this.codeName = name;
    this.reason = fields.reason;
    this.cmqCode = fields.cmqCode;
    this.details = fields.details;
    this.neverSent = fields.neverSent ?? false;
  }

  /** The error-table entry of this error, if it came from Spool. */
  get errorCase(): ErrorCase | undefined {
    return ERROR_CASES.find((known) => known.reason === this.reason);
  }
}

/** The reason and CMQ code in a status' details, if it has a Spool ErrorInfo. */
export function errorInfo(metadata: Metadata | undefined): { reason: string; cmqCode: number | undefined } | undefined {
  for (const value of metadata?.get(STATUS_DETAILS_KEY) ?? []) {
    if (typeof value === "string") continue; // a -bin key always holds bytes
    let decoded;
    try {
      decoded = fromBinary(StatusSchema, value);
    } catch {
      return undefined; // not a google.rpc.Status: no details to read
    }
    for (const detail of decoded.details) {
      if (detail.typeUrl !== ERROR_INFO_TYPE) continue;
      const info = fromBinary(ErrorInfoSchema, detail.value);
      if (info.domain !== ERROR_DOMAIN) continue;
      const code = Number.parseInt(info.metadata[CMQ_CODE_KEY] ?? "", 10);
      return { reason: info.reason, cmqCode: Number.isNaN(code) ? undefined : code };
    }
  }
  return undefined;
}

/** Turns what grpc-js rejects a call with into a SpoolError. */
export function toSpoolError(error: unknown): SpoolError {
  if (error instanceof SpoolError) return error;
  const service = error as Partial<ServiceError>;
  if (typeof service.code === "number") {
    const info = errorInfo(service.metadata);
    return new SpoolError({
      code: service.code,
      details: service.details ?? String(error),
      reason: info?.reason,
      cmqCode: info?.cmqCode,
    });
  }
  return new SpoolError({ code: GrpcStatus.UNKNOWN, details: String(error) });
}
