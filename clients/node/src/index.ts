// @spool/client: the Node.js client of Spool. README.md shows it in use.
//
// Layout: client.ts is SpoolClient and its options; retry.ts what is retried and the backoff;
// errors.ts the error table and SpoolError; gen/ the protobuf-es types generated from the protos
// (scripts/generate.mjs).

export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_ENDPOINT,
  DEFAULT_KEEPALIVE_INTERVAL_MS,
  DEFAULT_KEEPALIVE_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  SpoolClient,
  type BatchEntry,
  type Body,
  type ClientOptions,
  type ConsumeOptions,
  type Delivery,
  type Pem,
  type QueueAttributesInit,
  type ReceiveOptions,
  type SendOptions,
} from "./client.js";
export { CMQ_CODE_KEY, ERROR_CASES, ERROR_DOMAIN, SpoolError, codeName, type ErrorCase } from "./errors.js";
export { RetryPolicy, notCarriedOut, type RetryOptions, type Safety } from "./retry.js";
export type {
  BatchChangeMessageVisibilityResponse,
  ChangeVisibilityFailure,
  ChangedVisibility,
  DeadLetterPolicy,
  DeleteFailure,
  ListQueuesResponse,
  Queue,
  QueueAttributes,
  PeekedMessage,
  QueueStats,
  ReceivedMessage,
  RedriveMessagesResponse,
  ListSubscriptionsResponse,
  ListTopicsResponse,
  PublishMessageResponse,
  PublishedCopy,
  Subscription,
  Topic,
  TopicAttributes,
} from "./gen/spool/v1/queue_pb.js";
export { FilterType } from "./gen/spool/v1/queue_pb.js";
export { status as GrpcStatus } from "@grpc/grpc-js";
