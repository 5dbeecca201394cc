// The queue attributes as form fields: one spec per field of spool.v1.QueueAttributes, with the
// API's ranges (docs/api.md), so the browser checks them before the server does.
import type { QueueAttributes } from "./gen/spool/v1/queue_pb.js";

type NumberKey = "visibilityTimeoutSeconds" | "pollingWaitSeconds" | "maxMessageSize" | "messageRetentionSeconds" | "rewindSeconds";

interface Spec {
  key: NumberKey | "maxBacklog";
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
    attributes[spec.key] = spec.key === "maxBacklog" ? BigInt(input.value) : Number(input.value);
  }
  return attributes as Partial<QueueAttributes>;
}
