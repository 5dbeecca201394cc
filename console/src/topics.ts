// The console's topics: the list with their counters, one topic's subscriptions, and the forms
// that create and delete a topic, subscribe and unsubscribe a queue, and publish. Plain DOM, every
// text set through textContent, as in console.ts.
import { FilterType, type Subscription, type Topic } from "./gen/spool/v1/queue_pb.js";
import { spool } from "./api.js";

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  // The ids are index.html's, shipped with this script: a missing one is a build mistake.
  if (!found) throw new Error(`console: no element #${id}`);
  return found as T;
}

function count(value: bigint | undefined): string {
  return (value ?? 0n).toLocaleString();
}

/** A comma-separated field's entries, trimmed, empty ones dropped. */
function entries(text: string): string[] {
  return text
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
}

/** The topic shown, from the location's hash (`#topic/<name>`); null otherwise. */
export function selectedTopic(): string | null {
  const match = /^#topic\/(.+)$/.exec(location.hash);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

function filterName(type: FilterType): string {
  return type === FilterType.ROUTING_KEYS ? "routing keys" : "tags";
}

/** Sets a row's cells (after its heading cell) to `texts`, touching only those that changed. */
function setCells(row: HTMLTableRowElement, texts: string[]): void {
  row.querySelectorAll("td").forEach((cell, index) => {
    const text = texts[index] ?? "";
    if (cell.textContent !== text) cell.textContent = text;
  });
}

function newRow(name: string, link: string | null, cells: number): HTMLTableRowElement {
  const row = document.createElement("tr");
  const heading = document.createElement("th");
  heading.scope = "row";
  if (link === null) {
    heading.textContent = name;
  } else {
    const anchor = document.createElement("a");
    anchor.href = link;
    anchor.textContent = name;
    heading.append(anchor);
  }
  row.append(heading);
  for (let index = 0; index < cells; index += 1) row.append(document.createElement("td"));
  return row;
}

/** Refreshes the topic list (on the list page). */
export async function refreshTopics(): Promise<void> {
  const page = await spool.listTopics({ pageSize: 200 });
  const body = element<HTMLTableElement>("topic-table").tBodies[0] as HTMLTableSectionElement;
  const rows = new Map(Array.from(body.rows, (row) => [row.dataset.topic ?? "", row]));
  const shown: HTMLTableRowElement[] = page.topics.map((topic: Topic) => {
    const row = rows.get(topic.name) ?? newRow(topic.name, `#topic/${encodeURIComponent(topic.name)}`, 4);
    row.dataset.topic = topic.name;
    setCells(row, [
      filterName(topic.attributes?.filterType ?? FilterType.TAGS),
      String(topic.subscriptionCount),
      count(topic.stats?.publishedMessages),
      count(topic.stats?.unroutedMessages),
    ]);
    return row;
  });
  // Rows kept in place when unchanged, so a focused link keeps its focus.
  const same = shown.length === body.rows.length && shown.every((row, index) => body.rows[index] === row);
  if (!same) body.replaceChildren(...shown);
}

/** The filter type of the topic shown, for the subscribe and publish forms. */
let shownFilter: FilterType = FilterType.TAGS;

/** Refreshes one topic's page: its counters and its subscriptions. */
export async function refreshTopic(name: string): Promise<void> {
  const topic = await spool.getTopic({ topicName: name });
  shownFilter = topic.attributes?.filterType ?? FilterType.TAGS;
  const terms: [string, string][] = [
    ["Filter", filterName(shownFilter)],
    ["Published", count(topic.stats?.publishedMessages)],
    ["Unrouted", count(topic.stats?.unroutedMessages)],
  ];
  const list = element<HTMLDListElement>("topic-stats");
  list.replaceChildren(
    ...terms.flatMap(([term, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.dataset.term = term;
      dd.textContent = value;
      return [dt, dd];
    }),
  );
  const page = await spool.listSubscriptions({ topicName: name, pageSize: 100 });
  const body = element<HTMLTableElement>("subscription-table").tBodies[0] as HTMLTableSectionElement;
  const rows = new Map(Array.from(body.rows, (row) => [row.dataset.subscription ?? "", row]));
  const shown = page.subscriptions.map((subscription: Subscription) => {
    let row = rows.get(subscription.name);
    if (!row) {
      row = newRow(subscription.name, null, 4);
      row.dataset.subscription = subscription.name;
      const action = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `Unsubscribe ${subscription.name}`;
      button.addEventListener("click", () => {
        spool
          .unsubscribe({ topicName: name, subscriptionName: subscription.name })
          .then(() => refreshTopic(name))
          .then(() => tell(`Unsubscribed ${subscription.name}.`))
          .catch(complainTo);
      });
      action.append(button);
      row.append(action);
    }
    const filter = [...subscription.filterTags, ...subscription.bindingKeys];
    const cells = Array.from(row.querySelectorAll("td")).slice(0, 4);
    const texts = [
      subscription.queueName,
      filter.length === 0 ? "every message" : filter.join(", "),
      count(subscription.deliveredMessages),
      count(subscription.filteredOutMessages),
    ];
    cells.forEach((cell, index) => {
      const text = texts[index] ?? "";
      if (cell.textContent !== text) cell.textContent = text;
    });
    return row;
  });
  const same = shown.length === body.rows.length && shown.every((row, index) => body.rows[index] === row);
  if (!same) body.replaceChildren(...shown);
}

/** Where the page reports outcomes and failures (console.ts's). */
let tell: (text: string) => void = () => {};
let complainTo: (error: unknown) => void = () => {};

/**
 * Wires the topic forms. `onSubmit` is console.ts's (button disabled while the call runs,
 * outcome reported); `confirm` asks before deleting.
 */
export function wireTopics(
  onSubmit: (id: string, action: (form: HTMLFormElement) => Promise<string | null>) => void,
  confirm: (title: string, text: string, action: string, typed?: string, what?: string) => Promise<boolean>,
  say: (text: string) => void,
  complain: (error: unknown) => void,
): void {
  tell = say;
  complainTo = complain;
  const current = (): string => {
    const name = selectedTopic();
    if (name === null) throw new Error("no topic is selected");
    return name;
  };
  onSubmit("create-topic-form", async (form) => {
    const name = element<HTMLInputElement>("create-topic-name").value.trim();
    const keys = element<HTMLSelectElement>("create-topic-filter").value === "keys";
    const topic = await spool.createTopic({
      topicName: name,
      attributes: { filterType: keys ? FilterType.ROUTING_KEYS : FilterType.TAGS },
    });
    form.reset();
    location.hash = `#topic/${encodeURIComponent(topic.name)}`;
    return `Created topic ${topic.name}.`;
  });
  onSubmit("subscribe-form", async (form) => {
    const topicName = current();
    const filter = entries(element<HTMLInputElement>("subscribe-filter").value);
    const keys = shownFilter === FilterType.ROUTING_KEYS;
    const subscription = await spool.subscribe({
      topicName,
      subscriptionName: element<HTMLInputElement>("subscribe-name").value.trim(),
      queueName: element<HTMLInputElement>("subscribe-queue").value.trim(),
      filterTags: keys ? [] : filter,
      bindingKeys: keys ? filter : [],
    });
    form.reset();
    await refreshTopic(topicName);
    return `Subscribed ${subscription.queueName} as ${subscription.name}.`;
  });
  onSubmit("publish-form", async () => {
    const topicName = current();
    const route = element<HTMLInputElement>("publish-route").value.trim();
    const keys = shownFilter === FilterType.ROUTING_KEYS;
    const published = await spool.publishMessage({
      topicName,
      body: new TextEncoder().encode(element<HTMLTextAreaElement>("publish-body").value),
      tags: keys ? [] : entries(route),
      routingKey: keys ? route : "",
    });
    await refreshTopic(topicName);
    const copies = published.copies.length;
    return `Published message ${published.messageId}: ${copies} ${copies === 1 ? "copy" : "copies"}.`;
  });
  element("delete-topic").addEventListener("click", () => {
    const name = current();
    confirm(`Delete topic ${name}?`, "Its subscriptions go with it; the copies already in queues stay.", "Delete topic", name, "topic")
      .then(async (ok) => {
        if (!ok) return;
        await spool.deleteTopic({ topicName: name });
        location.hash = "";
        say(`Deleted topic ${name}.`);
      })
      .catch(complain);
  });
}
