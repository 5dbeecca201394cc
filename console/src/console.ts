// Spool's web console: the queues with live counters, one queue's attributes and actions. Plain
// DOM (no framework), every text set through textContent (a queue name or a message body is
// never parsed as HTML), every action a labelled form or button reachable by keyboard.
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { describe, setToken, spool, token } from "./api.js";
import { fillFields, readFields, renderFields } from "./attributes.js";
import type { PeekedMessage, Queue } from "./gen/spool/v1/queue_pb.js";
import { refreshTopic, refreshTopics, selectedTopic, wireTopics } from "./topics.js";

/** How often the counters refresh while the page is visible. */
const REFRESH_MS = 2_000;
/** Queues listed at once (the API's page); the prefix filter narrows a longer list. */
const PAGE_SIZE = 200;
/** Characters of a peeked body shown; the rest is cut (a body may be up to 1 MiB). */
const SHOWN_BODY_CHARS = 500;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  // The ids are index.html's, shipped with this script: a missing one is a build mistake.
  if (!found) throw new Error(`console: no element #${id}`);
  return found as T;
}

const notice = element<HTMLParagraphElement>("notice");
const problem = element<HTMLParagraphElement>("problem");

function say(text: string): void {
  problem.textContent = "";
  notice.textContent = text;
}

function complain(error: unknown): void {
  problem.textContent = describe(error);
}

function count(value: bigint | undefined): string {
  return (value ?? 0n).toLocaleString();
}

/** The bytes a queue holds, and of how many when it has a quota. */
function bytesHeld(held: bigint | undefined, max: bigint | undefined): string {
  return max ? `${count(held)} of ${count(max)}` : count(held);
}

function when(time: Timestamp | undefined): string {
  return time ? timestampDate(time).toLocaleString() : "—";
}

// ---- the queue list ----------------------------------------------------------------------

const queueRows = new Map<string, HTMLTableRowElement>();
const queueBody = element<HTMLTableElement>("queue-table").tBodies[0] as HTMLTableSectionElement;

/** Updates the rows in place (a focused link stays focused), adding and removing as needed. */
function renderQueues(queues: Queue[], total: bigint): void {
  const names = new Set(queues.map((queue) => queue.name));
  for (const [name, row] of queueRows) {
    if (!names.has(name)) {
      row.remove();
      queueRows.delete(name);
    }
  }
  let previous: HTMLTableRowElement | null = null;
  for (const queue of queues) {
    let row = queueRows.get(queue.name);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.queue = queue.name;
      const nameCell = document.createElement("th");
      nameCell.scope = "row";
      const link = document.createElement("a");
      link.href = `#queue/${encodeURIComponent(queue.name)}`;
      link.textContent = queue.name;
      nameCell.append(link);
      row.append(nameCell);
      for (const field of ["visible", "in-flight", "delayed", "rewindable"]) {
        const cell = document.createElement("td");
        cell.className = "number";
        cell.dataset.field = field;
        row.append(cell);
      }
      const oldest = document.createElement("td");
      oldest.dataset.field = "oldest";
      row.append(oldest);
      queueRows.set(queue.name, row);
    }
    const stats = queue.stats;
    const cells = row.querySelectorAll("td");
    const texts = [
      count(stats?.activeMessages),
      count(stats?.inactiveMessages),
      count(stats?.delayedMessages),
      count(stats?.rewindableMessages),
      when(stats?.oldestMessageTime),
    ];
    cells.forEach((cell, index) => {
      const text = texts[index] ?? "";
      if (cell.textContent !== text) cell.textContent = text;
    });
    // Keep the API's name order.
    const expected: ChildNode | null = previous ? previous.nextSibling : queueBody.firstChild;
    if (expected !== row) queueBody.insertBefore(row, expected);
    previous = row;
  }
  const shown = queues.length;
  element("queue-count").textContent =
    BigInt(shown) < total ? `Showing ${shown} of ${total} queues; narrow them by prefix.` : `${shown} queue${shown === 1 ? "" : "s"}.`;
}

// ---- one queue ---------------------------------------------------------------------------

const queueSection = element<HTMLElement>("queue");
const listSection = element<HTMLElement>("queues");
const topicsSection = element<HTMLElement>("topics");
const topicSection = element<HTMLElement>("topic");
const updateFields = document.querySelector<HTMLFieldSetElement>('[data-attributes="update"]') as HTMLFieldSetElement;
const createFields = document.querySelector<HTMLFieldSetElement>('[data-attributes="create"]') as HTMLFieldSetElement;
renderFields(updateFields, "update");
renderFields(createFields, "create", "Attributes");

/** The queue shown, from the location's hash (`#queue/<name>`); null on the list. */
function selected(): string | null {
  const match = /^#queue\/(.+)$/.exec(location.hash);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

function renderQueue(queue: Queue): void {
  const stats = queue.stats;
  const terms: [string, string][] = [
    ["Visible", count(stats?.activeMessages)],
    ["In flight", count(stats?.inactiveMessages)],
    ["Delayed", count(stats?.delayedMessages)],
    ["Rewindable", count(stats?.rewindableMessages)],
    ["Bytes held", bytesHeld(stats?.backlogBytes, queue.attributes?.maxBytes)],
    ["Oldest message", when(stats?.oldestMessageTime)],
    ["Created", when(queue.createTime)],
    ["Attributes changed", when(queue.updateTime)],
  ];
  const list = element<HTMLDListElement>("queue-stats");
  if (list.children.length !== terms.length * 2) {
    list.replaceChildren(
      ...terms.flatMap(([term]) => {
        const dt = document.createElement("dt");
        dt.textContent = term;
        const dd = document.createElement("dd");
        dd.dataset.term = term;
        return [dt, dd];
      }),
    );
  }
  for (const [term, value] of terms) {
    const dd = list.querySelector<HTMLElement>(`dd[data-term="${term}"]`);
    if (dd && dd.textContent !== value) dd.textContent = value;
  }
  renderDeadLetter(queue);
}

/**
 * Where the queue's dead letters go, and which queues send theirs here (then it is a dead-letter
 * queue, and the redrive form is shown). Queue names are links to their pages.
 */
function renderDeadLetter(queue: Queue): void {
  const section = element<HTMLElement>("dead-letter");
  const target = element<HTMLParagraphElement>("dead-letter-target");
  const policy = queue.attributes?.deadLetterPolicy;
  if (policy && policy.deadLetterQueue !== "") {
    const rules = [`after ${policy.maxReceiveCount} receive${policy.maxReceiveCount === 1 ? "" : "s"}`];
    if (policy.maxTimeToLiveSeconds > 0) rules.push(`${policy.maxTimeToLiveSeconds} s after the send`);
    replaceWithLinks(target, "Messages not processed go to ", [policy.deadLetterQueue], ` (${rules.join(", or ")}).`);
  } else {
    target.textContent = "No dead-letter policy: messages are delivered again until deleted or expired.";
  }
  section.hidden = false;
  const name = queue.name;
  spool
    .listDeadLetterSourceQueues({ queueName: name })
    .then((answer) => {
      if (selected() !== name) return;
      const sources = element<HTMLParagraphElement>("dead-letter-sources");
      const redrive = element<HTMLFormElement>("redrive-form");
      if (answer.queueNames.length === 0) {
        sources.textContent = "No queue sends its dead letters here.";
        redrive.hidden = true;
      } else {
        replaceWithLinks(sources, "Dead letters of ", answer.queueNames, " arrive here.");
        redrive.hidden = false;
      }
    })
    .catch(complain);
}

/** Sets `paragraph` to `before`, the queue names as links (comma-separated), then `after`. */
function replaceWithLinks(paragraph: HTMLElement, before: string, names: string[], after: string): void {
  const parts: (string | Node)[] = [before];
  names.forEach((name, index) => {
    if (index > 0) parts.push(", ");
    const link = document.createElement("a");
    link.href = `#queue/${encodeURIComponent(name)}`;
    link.textContent = name;
    parts.push(link);
  });
  parts.push(after);
  const same =
    paragraph.textContent === parts.map((part) => (typeof part === "string" ? part : part.textContent)).join("");
  // Left alone when unchanged, so a focused link keeps its focus across refreshes.
  if (!same) paragraph.replaceChildren(...parts);
}

/** Shows the list or one queue, as the hash says; a queue's fields are filled on arrival. */
async function route(): Promise<void> {
  const name = selected();
  const topic = selectedTopic();
  listSection.hidden = name !== null || topic !== null;
  topicsSection.hidden = listSection.hidden;
  topicSection.hidden = topic === null;
  queueSection.hidden = name === null;
  element<HTMLTableElement>("peek-table").hidden = true;
  if (topic !== null) {
    document.title = `${topic} · Spool console`;
    const heading = element<HTMLHeadingElement>("topic-heading");
    heading.textContent = `Topic ${topic}`;
    heading.focus();
    try {
      await refreshTopic(topic);
    } catch (error) {
      complain(error);
    }
    return;
  }
  if (name === null) {
    document.title = "Spool console";
    return;
  }
  document.title = `${name} · Spool console`;
  const heading = element<HTMLHeadingElement>("queue-heading");
  heading.textContent = name;
  heading.focus();
  element<HTMLInputElement>("rewind-time").value = localInputValue(new Date(Date.now() - 5 * 60_000));
  try {
    const queue = await spool.getQueue({ queueName: name });
    renderQueue(queue);
    fillFields(updateFields, queue.attributes);
  } catch (error) {
    complain(error);
  }
}

/** A datetime-local input's value for `date`, in local time, to the second. */
function localInputValue(date: Date): string {
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 19);
}

// ---- refreshing --------------------------------------------------------------------------

let refreshing: ReturnType<typeof setTimeout> | undefined;

/** One refresh of what is shown; then the next is scheduled (never two at once). */
async function refresh(): Promise<void> {
  clearTimeout(refreshing);
  try {
    const name = selected();
    const topic = selectedTopic();
    if (topic !== null) {
      await refreshTopic(topic);
    } else if (name === null) {
      const prefix = element<HTMLInputElement>("prefix").value.trim();
      const page = await spool.listQueues({ prefix, pageSize: PAGE_SIZE });
      renderQueues(page.queues, page.totalCount);
      await refreshTopics();
    } else {
      renderQueue(await spool.getQueue({ queueName: name }));
    }
    if (problem.textContent !== "" && problem.dataset.fromRefresh === "yes") problem.textContent = "";
  } catch (error) {
    complain(error);
    problem.dataset.fromRefresh = "yes";
  } finally {
    if (!document.hidden) refreshing = setTimeout(() => void refresh(), REFRESH_MS);
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) void refresh();
});

// ---- confirmation ------------------------------------------------------------------------

const dialog = element<HTMLDialogElement>("confirm");

/**
 * Asks before an action that destroys or restores data. With `typed`, the user must type it
 * (the queue's name) for the confirm button to work.
 */
function confirmAction(title: string, text: string, action: string, typed?: string, what = "queue"): Promise<boolean> {
  element("confirm-title").textContent = title;
  const typedLabel = document.querySelector<HTMLLabelElement>('label[for="confirm-typed"]');
  if (typedLabel) typedLabel.textContent = `Type the ${what} name to confirm`;
  element("confirm-text").textContent = text;
  const ok = element<HTMLButtonElement>("confirm-ok");
  ok.textContent = action;
  const typedRow = element<HTMLElement>("confirm-typed-row");
  const typedInput = element<HTMLInputElement>("confirm-typed");
  typedRow.hidden = typed === undefined;
  typedInput.value = "";
  ok.disabled = typed !== undefined;
  typedInput.oninput = () => {
    ok.disabled = typedInput.value !== typed;
  };
  dialog.returnValue = "";
  dialog.showModal();
  (typed === undefined ? (dialog.querySelector("button[value=cancel]") as HTMLButtonElement) : typedInput).focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// ---- actions -----------------------------------------------------------------------------

/** Runs a form's action with its submit button disabled, reporting the outcome. */
function onSubmit(id: string, action: (form: HTMLFormElement) => Promise<string | null>): void {
  const form = element<HTMLFormElement>(id);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const button = form.querySelector<HTMLButtonElement>("button[type=submit], button:not([type])");
    if (button) button.disabled = true;
    action(form)
      .then((done) => {
        if (done !== null) say(done);
      })
      .catch(complain)
      .finally(() => {
        if (button) button.disabled = false;
      });
  });
}

function currentQueue(): string {
  const name = selected();
  if (name === null) throw new Error("no queue is selected");
  return name;
}

element<HTMLInputElement>("token").value = token();
onSubmit("token-form", async () => {
  setToken(element<HTMLInputElement>("token").value.trim());
  await refresh();
  return token() === "" ? "Calling without a token." : "Token set for this tab.";
});
element("token-forget").addEventListener("click", () => {
  setToken("");
  element<HTMLInputElement>("token").value = "";
  say("Token forgotten.");
  void refresh();
});

element<HTMLFormElement>("filter-form").addEventListener("submit", (event) => event.preventDefault());
element<HTMLInputElement>("prefix").addEventListener("input", () => void refresh());

onSubmit("create-form", async (form) => {
  const name = element<HTMLInputElement>("create-name").value.trim();
  const queue = await spool.createQueue({ queueName: name, attributes: readFields(createFields, false) });
  form.reset();
  location.hash = `#queue/${encodeURIComponent(queue.name)}`;
  return `Created ${queue.name}.`;
});

wireTopics(onSubmit, confirmAction, say, complain);

onSubmit("send-form", async () => {
  const body = new TextEncoder().encode(element<HTMLTextAreaElement>("send-body").value);
  const delay = element<HTMLInputElement>("send-delay").value.trim();
  const sent = await spool.sendMessage({
    queueName: currentQueue(),
    body,
    ...(delay === "" ? {} : { delaySeconds: Number(delay) }),
  });
  void refresh();
  return `Sent message ${sent.messageId}.`;
});

onSubmit("peek-form", async () => {
  const maxMessages = Number(element<HTMLInputElement>("peek-count").value || "16");
  const peeked = await spool.peekMessages({ queueName: currentQueue(), maxMessages });
  const table = element<HTMLTableElement>("peek-table");
  const rows = peeked.messages.map((message) => {
    const row = document.createElement("tr");
    const id = document.createElement("td");
    id.className = "id";
    id.textContent = message.messageId;
    const enqueued = document.createElement("td");
    enqueued.textContent = when(message.enqueueTime);
    const dequeues = document.createElement("td");
    dequeues.className = "number";
    dequeues.textContent = String(message.dequeueCount);
    const body = document.createElement("td");
    body.className = "body";
    body.textContent = showBody(message.body);
    const details = document.createElement("td");
    details.className = "details";
    details.textContent = describeMessage(message);
    row.append(id, enqueued, dequeues, body, details);
    return row;
  });
  (table.tBodies[0] as HTMLTableSectionElement).replaceChildren(...rows);
  table.hidden = false;
  return rows.length === 0 ? "No visible message to peek at." : `Peeked at ${rows.length} message${rows.length === 1 ? "" : "s"}.`;
});

/** A peeked message's attributes and, once dead-lettered, where it came from. */
function describeMessage(message: PeekedMessage): string {
  const parts = Object.entries(message.attributes)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`);
  if (message.deadLetterSourceQueue !== "") {
    parts.push(`dead-lettered from ${message.deadLetterSourceQueue} after ${message.deadLetterReceiveCount} receives`);
  }
  return parts.join("; ");
}

/** A body as text when it is UTF-8, else its size and first bytes in hex; cut when long. */
function showBody(body: Uint8Array): string {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(body);
  } catch {
    const hex = Array.from(body.subarray(0, 64), (byte) => byte.toString(16).padStart(2, "0")).join(" ");
    return `(${body.length} bytes, not UTF-8) ${hex}${body.length > 64 ? " …" : ""}`;
  }
  return text.length > SHOWN_BODY_CHARS ? `${text.slice(0, SHOWN_BODY_CHARS)} … (${body.length} bytes)` : text;
}

onSubmit("update-form", async () => {
  const attributes = readFields(updateFields, true);
  if (Object.keys(attributes).length === 0) return "Nothing changed.";
  const queue = await spool.updateQueue({ queueName: currentQueue(), attributes });
  fillFields(updateFields, queue.attributes);
  renderQueue(queue);
  return `Updated ${queue.name}.`;
});

onSubmit("rewind-form", async () => {
  const name = currentQueue();
  const value = element<HTMLInputElement>("rewind-time").value;
  const start = new Date(value);
  if (Number.isNaN(start.getTime())) throw new Error("Rewind to: not a date and time");
  const sure = await confirmAction(
    `Rewind ${name}?`,
    `Every kept message enqueued since ${start.toLocaleString()} becomes receivable again, and consumers will process it again.`,
    "Rewind",
  );
  if (!sure) return null;
  const rewound = await spool.rewindQueue({ queueName: name, startTime: timestampFromDate(start) });
  void refresh();
  return `Rewound ${name}: ${rewound.restoredMessages} message${rewound.restoredMessages === 1n ? "" : "s"} receivable again.`;
});

onSubmit("redrive-form", async () => {
  const name = currentQueue();
  const destination = element<HTMLInputElement>("redrive-destination").value.trim();
  const where = destination === "" ? "back to the queue each came from" : `to ${destination}`;
  const sure = await confirmAction(
    `Redrive ${name}?`,
    `Every visible message of ${name} moves ${where}, oldest first, and consumers there will receive it again.`,
    "Redrive",
  );
  if (!sure) return null;
  const moved = await spool.redriveMessages({ queueName: name, destinationQueue: destination, maxMessages: 0 });
  void refresh();
  const skipped = moved.skippedMessages > 0n ? `; ${moved.skippedMessages} stayed (their source queue is gone)` : "";
  return `Redrove ${moved.redrivenMessages} message${moved.redrivenMessages === 1n ? "" : "s"} from ${name}${skipped}.`;
});

element("purge").addEventListener("click", () => {
  const name = currentQueue();
  void confirmAction(
    `Purge ${name}?`,
    "Every message is removed: visible, delayed and in flight. Only a rewind window keeps them (a rewind brings them back); without one they are gone.",
    "Purge",
    name,
  ).then(async (sure) => {
    if (!sure) return;
    try {
      const purged = await spool.purgeQueue({ queueName: name });
      element<HTMLTableElement>("peek-table").hidden = true;
      say(`Purged ${name}: ${purged.purgedMessages} message${purged.purgedMessages === 1n ? "" : "s"} removed.`);
      void refresh();
    } catch (error) {
      complain(error);
    }
  });
});

element("delete").addEventListener("click", () => {
  const name = currentQueue();
  void confirmAction(
    `Delete ${name}?`,
    "The queue and every message in it are deleted. This cannot be undone.",
    "Delete queue",
    name,
  ).then(async (sure) => {
    if (!sure) return;
    try {
      await spool.deleteQueue({ queueName: name });
      location.hash = "";
      say(`Deleted ${name}.`);
    } catch (error) {
      complain(error);
    }
  });
});

window.addEventListener("hashchange", () => {
  void route().then(refresh);
});
void route().then(refresh);
