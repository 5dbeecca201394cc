// The console's one connection to Spool: gRPC-Web on the origin that served the page, with the
// bearer token (when one is set) on every call, as the gRPC API takes it.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { QueueService } from "./gen/spool/v1/queue_pb.js";

/** sessionStorage key of the token: kept for this tab only, gone when it closes. */
const TOKEN_KEY = "spool.token";
/** Every call's deadline: a console call is small; a stalled one must not hang the page. */
export const CALL_TIMEOUT_MS = 10_000;

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string): void {
  if (value === "") sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, value);
}

/** Adds `authorization: Bearer <token>` when the user gave a token. */
const bearer: Interceptor = (next) => (request) => {
  const current = token();
  if (current !== "") request.header.set("authorization", `Bearer ${current}`);
  return next(request);
};

export const spool: Client<typeof QueueService> = createClient(
  QueueService,
  createGrpcWebTransport({
    baseUrl: location.origin,
    useBinaryFormat: true,
    interceptors: [bearer],
    defaultTimeoutMs: CALL_TIMEOUT_MS,
  }),
);

/** A failed call as one line: the gRPC code's name and the server's message. */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) {
    const code = Code[error.code] ?? String(error.code);
    const hint =
      error.code === Code.Unauthenticated
        ? " (set a bearer token above)"
        : error.code === Code.PermissionDenied
          ? " (the token's grants do not allow this)"
          : "";
    return `${code}: ${error.rawMessage}${hint}`;
  }
  return error instanceof Error ? error.message : String(error);
}
