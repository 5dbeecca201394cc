// The queue attributes as form fields: one spec per field of spool.v1.QueueAttributes, with the
// API's ranges (docs/api.md), so the browser checks them before the server does.
import { create } from "@bufbuild/protobuf";

import { DeadLetterPolicySchema, type DeadLetterPolicy, type QueueAttributes } from "./gen/spool/v1/queue_pb.js";

type NumberKey =
  | "visibilityTimeoutSeconds"
  | "pollingWaitSeconds"
  | "maxMessageSize"
  | "messageRetentionSeconds"
  | "rewindSeconds"
  | "deduplicationWindowSeconds";

/** The uint64 attributes, which the generated code holds as bigint. */
type BigKey = "maxBacklog" | "maxBytes";

interface Spec {
  key: NumberKey | BigKey;
  label: string;
  min: number;
  max?: number;
  help: string;
}

export const SPECS: readonly Spec[] = [
  { key: "visibilityTimeoutSeconds", label: "Visibility timeout (s)", min: 1, max: 43_200, help: "1 to 43,200; default 30" },
  { key: "pollingWaitSeconds", label: "Polling wait (s)", min: 0, max: 30, help: "0 to 30; default 0" },
  { key: "maxMessageSize", label: "Max message size (bytes)", min: 1024, max: 1_048_576, help: "1,024 to 1,048,576; default 65,536" },
  { key: "messageRetentionSeconds", label: "Retention (s)", min: 60, max: 1_296_000, help: "60 to 1,296,000 (15 days); default 345,600" },
  { key: "rewindSeconds", label: "Rewind window (s)", min: 0, max: 1_296_000, help: "0 (off; the default) up to the retention" },
  { key: "maxBacklog", label: "Max backlog (messages)", min: 1, max: 1_000_000_000, help: "1 to 1,000,000,000; default 100,000,000" },
  {
    key: "deduplicationWindowSeconds",
    label: "Deduplication window (s)",
    min: 0,
    max: 86_400,
    help: "0 (off) to 86,400; default 300",
  },
  {
    key: "maxBytes",
    label: "Max bytes",
    min: 0,
    max: 2 ** 50,
    help: "bodies and attributes held, rewindable ones too: 0 (no quota; the default) to 2^50 (1 PiB)",
  },
];

function isBig(key: Spec["key"]): key is BigKey {
  return key === "maxBacklog" || key === "maxBytes";
}

/**
 * The dead-letter policy's fields. The policy is one value: an update sends all three when any
 * of them changed, and an empty queue name removes the policy.
 */
interface DeadLetterSpec {
  key: "deadLetterQueue" | "maxReceiveCount" | "maxTimeToLiveSeconds";
  label: string;
  kind: "text" | "number";
  min?: number;
  max?: number;
  help: string;
}

const DEAD_LETTER_SPECS: readonly DeadLetterSpec[] = [
  {
    key: "deadLetterQueue",
    label: "Dead-letter queue",
    kind: "text",
    help: "an existing queue, not this one; empty: no policy (on update: removes it)",
  },
  { key: "maxReceiveCount", label: "Max receives", kind: "number", min: 1, max: 1000, help: "1 to 1,000 receives before the move" },
  {
    key: "maxTimeToLiveSeconds",
    label: "Dead-letter after (s)",
    kind: "number",
    min: 0,
    max: 43_200,
    help: "0 (off), or 300 to 43,200 seconds after the send",
  },
];

/**
 * Fills `fieldset` with one labelled number input per attribute, ids prefixed by `prefix`,
 * under `legend` when the fieldset has no heading of its own.
 */
export function renderFields(fieldset: HTMLFieldSetElement, prefix: string, legend?: string): void {
  fieldset.replaceChildren();
  if (legend !== undefined) {
    const caption = document.createElement("legend");
    caption.textContent = legend;
    fieldset.append(caption);
  }
  for (const spec of SPECS) {
    const id = `${prefix}-${spec.key}`;
    const row = document.createElement("div");
    row.className = "field";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = spec.label;
    const input = document.createElement("input");
    input.id = id;
    input.name = spec.key;
    input.type = "number";
    input.inputMode = "numeric";
    input.min = String(spec.min);
    if (spec.max !== undefined) input.max = String(spec.max);
    input.setAttribute("aria-describedby", `${id}-help`);
    const help = document.createElement("small");
    help.id = `${id}-help`;
    help.textContent = spec.help;
    row.append(label, input, help);
    fieldset.append(row);
  }
  for (const spec of DEAD_LETTER_SPECS) {
    const id = `${prefix}-${spec.key}`;
    const row = document.createElement("div");
    row.className = "field";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = spec.label;
    const input = document.createElement("input");
    input.id = id;
    input.name = spec.key;
    input.dataset.deadLetter = "yes";
    if (spec.kind === "number") {
      input.type = "number";
      input.inputMode = "numeric";
      if (spec.min !== undefined) input.min = String(spec.min);
      if (spec.max !== undefined) input.max = String(spec.max);
    } else {
      input.type = "text";
      input.maxLength = 64;
      input.autocomplete = "off";
      input.spellcheck = false;
    }
    input.setAttribute("aria-describedby", `${id}-help`);
    const help = document.createElement("small");
    help.id = `${id}-help`;
    help.textContent = spec.help;
    row.append(label, input, help);
    fieldset.append(row);
  }
}

/** Puts `attributes` in the fields, and remembers them to tell later what the user changed. */
export function fillFields(fieldset: HTMLFieldSetElement, attributes: QueueAttributes | undefined): void {
  for (const spec of SPECS) {
    const input = fieldset.querySelector<HTMLInputElement>(`input[name="${spec.key}"]`);
    if (!input) continue;
    const value = attributes?.[spec.key];
    input.value = value === undefined ? "" : String(value);
    input.dataset.shown = input.value;
  }
  const policy = attributes?.deadLetterPolicy;
  for (const spec of DEAD_LETTER_SPECS) {
    const input = fieldset.querySelector<HTMLInputElement>(`input[name="${spec.key}"]`);
    if (!input) continue;
    const value = policy && policy.deadLetterQueue !== "" ? policy[spec.key] : undefined;
    input.value = value === undefined ? "" : String(value);
    input.dataset.shown = input.value;
  }
}

/**
 * The attributes the fields set: every non-empty one (`changedOnly`: only those the user
 * changed since `fillFields`, so an update does not overwrite what someone else changed).
 */
export function readFields(fieldset: HTMLFieldSetElement, changedOnly: boolean): Partial<QueueAttributes> {
  const attributes: Partial<Record<Spec["key"], number | bigint>> = {};
  for (const spec of SPECS) {
    const input = fieldset.querySelector<HTMLInputElement>(`input[name="${spec.key}"]`);
    if (!input || input.value.trim() === "") continue;
    if (changedOnly && input.value === input.dataset.shown) continue;
    attributes[spec.key] = isBig(spec.key) ? BigInt(input.value) : Number(input.value);
  }
  const result = attributes as Partial<QueueAttributes>;
  const policy = readDeadLetterPolicy(fieldset, changedOnly);
  if (policy !== undefined) result.deadLetterPolicy = policy;
  return result;
}

/**
 * The dead-letter policy the fields set, or undefined to leave it as it is (`changedOnly` and
 * nothing changed, or on create no queue named).
 */
function readDeadLetterPolicy(fieldset: HTMLFieldSetElement, changedOnly: boolean): DeadLetterPolicy | undefined {
  const inputs = DEAD_LETTER_SPECS.map((spec) => fieldset.querySelector<HTMLInputElement>(`input[name="${spec.key}"]`));
  const changed = inputs.some((input) => input !== null && input.value !== input.dataset.shown);
  if (changedOnly && !changed) return undefined;
  const [queue, receives, ttl] = inputs.map((input) => input?.value.trim() ?? "");
  if (queue === "" && !changedOnly) return undefined;
  return create(DeadLetterPolicySchema, {
    deadLetterQueue: queue ?? "",
    maxReceiveCount: receives ? Number(receives) : 0,
    maxTimeToLiveSeconds: ttl ? Number(ttl) : 0,
  });
}
