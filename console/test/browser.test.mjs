// The console in a real headless Chromium (Debian's, driven by playwright-core), against a
// real `spool serve` with an auth file: the token field, create a queue, send, watch the
// counters change live when another client sends, peek, purge, delete; topics: create,
// subscribe, publish, unsubscribe, delete. Any script error,
// failed request or Content-Security-Policy violation in the page fails the test.
//
// Chromium: $CHROMIUM, else /usr/bin/chromium (apt-get install chromium). Without it the test
// fails under CI=true and is skipped otherwise. SPOOL_CONSOLE_SCREENSHOT=path saves a
// screenshot of a queue's page there (docs/console.png is made so).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

import { serverBinary, startServer } from "../../clients/node/test/server.mjs";

const TOKEN = "console-test-token";
const QUEUE = "browser-test";
/** Longest wait for something the page shows: counters refresh every 2 s. */
const SHOWN_MS = 15_000;

function browserBinary() {
  const path = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (existsSync(path)) return { path };
  const reason = `no Chromium at ${path}: apt-get install chromium (or set CHROMIUM)`;
  if (process.env.CI === "true") throw new Error(reason);
  return { skip: reason };
}

const spool = serverBinary();
const browserFound = browserBinary();
const skip = spool.skip ?? browserFound.skip;

test("the console creates, sends, shows live counters, peeks, purges and deletes", { skip }, async (t) => {
  const { server, page, troubles } = await openConsole(t, { token: false });

  await page.goto(`${server.endpoint}/`);
  assert.equal(new URL(page.url()).pathname, "/console/", "/ leads to the console");
  await page.getByRole("heading", { name: "Queues" }).waitFor();

  // Without a token the server refuses, and the page says so.
  await page.getByRole("alert").filter({ hasText: "Unauthenticated" }).waitFor();
  await page.getByLabel("Bearer token").fill(TOKEN);
  await page.getByRole("button", { name: "Use" }).click();
  await page.getByRole("status").filter({ hasText: "Token set for this tab." }).waitFor();
  assert.equal(await page.getByRole("alert").textContent(), "");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("spool.token")), TOKEN);

  // Create, with a rewind window so the purge stays undoable.
  await page.getByText("Create a queue").click();
  await page.locator("#create-form").getByLabel("Name").fill(QUEUE);
  await page.locator("#create-form").getByLabel("Rewind window (s)").fill("3600");
  await page.getByRole("button", { name: "Create" }).click();
  await page.getByRole("heading", { name: QUEUE, level: 2 }).waitFor();
  assert.equal(await page.locator("#update-form").getByLabel("Rewind window (s)").inputValue(), "3600");
  assert.equal(await page.locator("#update-form").getByLabel("Visibility timeout (s)").inputValue(), "30");

  const visible = page.locator('#queue-stats dd[data-term="Visible"]');
  await page.getByLabel("Body (UTF-8 text)").fill("hello from the browser");
  await page.getByRole("button", { name: "Send", exact: true }).click();
  await page.getByRole("status").filter({ hasText: "Sent message" }).waitFor();
  await waitForText(visible, "1");

  // Another client sends: the counter follows with no action in the page.
  await promisify(execFile)(spool.binary, ["send", "--endpoint", server.endpoint, QUEUE, "from the command line"], {
    env: { ...process.env, SPOOL_TOKEN: TOKEN },
  });
  await waitForText(visible, "2");

  await page.getByRole("button", { name: "Peek" }).click();
  const peeked = page.locator("#peek-table tbody tr");
  await waitForCount(peeked, 2);
  assert.match(await peeked.nth(0).textContent(), /hello from the browser/);
  assert.match(await peeked.nth(1).textContent(), /from the command line/);
  if (process.env.SPOOL_CONSOLE_SCREENSHOT) {
    await page.screenshot({ path: process.env.SPOOL_CONSOLE_SCREENSHOT, fullPage: true });
  }

  // The list shows the same counters.
  await page.getByRole("link", { name: "Back to the queues" }).click();
  const row = page.locator(`#queue-table tbody tr[data-queue="${QUEUE}"]`);
  await waitForText(row.locator('td[data-field="visible"]'), "2");
  await row.getByRole("link", { name: QUEUE }).click();

  // Purge asks first; cancelling (Escape) changes nothing, confirming needs the name typed.
  await page.getByRole("button", { name: "Purge…" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  // By keyboard: the dialog takes focus, Escape cancels.
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await visible.textContent(), "2");
  await page.getByRole("button", { name: "Purge…" }).click();
  const confirm = dialog.getByRole("button", { name: "Purge", exact: true });
  assert.equal(await confirm.isDisabled(), true, "confirming needs the name typed");
  await dialog.getByLabel("Type the queue name to confirm").fill(QUEUE);
  await confirm.click();
  await page.getByRole("status").filter({ hasText: `Purged ${QUEUE}: 2 messages removed.` }).waitFor();
  await waitForText(visible, "0");
  await waitForText(page.locator('#queue-stats dd[data-term="Rewindable"]'), "2");

  await page.getByRole("button", { name: "Delete queue…" }).click();
  await dialog.getByLabel("Type the queue name to confirm").fill(QUEUE);
  await dialog.getByRole("button", { name: "Delete queue", exact: true }).click();
  await page.getByRole("status").filter({ hasText: `Deleted ${QUEUE}.` }).waitFor();
  await page.getByRole("heading", { name: "Queues" }).waitFor();
  await row.waitFor({ state: "detached" });

  assert.deepEqual(troubles, []);
});

test("the console sets a dead-letter policy, links the queues and redrives", { skip }, async (t) => {
  const { server, page, troubles } = await openConsole(t);
  const run = (...args) =>
    promisify(execFile)(spool.binary, [args[0], "--endpoint", server.endpoint, ...args.slice(1)], {
      env: { ...process.env, SPOOL_TOKEN: TOKEN },
    });
  const runQueue = (...args) =>
    promisify(execFile)(spool.binary, ["queue", args[0], "--endpoint", server.endpoint, ...args.slice(1)], {
      env: { ...process.env, SPOOL_TOKEN: TOKEN },
    });
  await runQueue("create", "orders");
  await runQueue("create", "orders-dead");

  // The policy is set in the attributes form, and the page links both ways.
  await page.goto(`${server.endpoint}/console/#queue/orders`);
  await page.getByRole("heading", { name: "orders", level: 2 }).waitFor();
  const form = page.locator("#update-form");
  await form.getByLabel("Dead-letter queue").fill("orders-dead");
  await form.getByLabel("Max receives").fill("1");
  await form.getByRole("button", { name: "Update" }).click();
  await page.getByRole("status").filter({ hasText: "Updated orders." }).waitFor();
  await page.locator("#dead-letter-target").getByRole("link", { name: "orders-dead" }).waitFor();

  // One receive without a delete, then the next receive moves the message instead.
  await run("send", "orders", "will fail");
  await run("receive", "orders", "--visibility-timeout", "1");
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  await run("receive", "orders", "--wait", "0");

  await page.locator("#dead-letter-target").getByRole("link", { name: "orders-dead" }).click();
  await page.getByRole("heading", { name: "orders-dead", level: 2 }).waitFor();
  await page.locator("#dead-letter-sources").getByRole("link", { name: "orders" }).waitFor();
  await waitForText(page.locator('#queue-stats dd[data-term="Visible"]'), "1");
  await page.getByRole("button", { name: "Peek" }).click();
  const peeked = page.locator("#peek-table tbody tr");
  await waitForCount(peeked, 1);
  assert.match(await peeked.nth(0).textContent(), /dead-lettered from orders after 1 receives/);

  // Redrive asks first, then moves it back where it came from.
  await page.getByRole("button", { name: "Redrive…" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Redrive", exact: true }).click();
  await page.getByRole("status").filter({ hasText: "Redrove 1 message from orders-dead." }).waitFor();
  await waitForText(page.locator('#queue-stats dd[data-term="Visible"]'), "0");
  const back = JSON.parse((await run("receive", "orders", "--wait", "5")).stdout.trim().split("\n")[0]);
  assert.equal(back.body, "will fail");

  assert.deepEqual(troubles, []);
});

test("the console creates a topic, subscribes two queues, publishes, and the copies show in the queues", { skip }, async (t) => {
  const { server, page, troubles } = await openConsole(t);
  const runQueue = (...args) =>
    promisify(execFile)(spool.binary, ["queue", args[0], "--endpoint", server.endpoint, ...args.slice(1)], {
      env: { ...process.env, SPOOL_TOKEN: TOKEN },
    });
  await runQueue("create", "fan-all");
  await runQueue("create", "fan-sport");

  await page.goto(`${server.endpoint}/console/`);
  await page.getByRole("heading", { name: "Topics" }).waitFor();
  await page.getByText("Create a topic").click();
  await page.getByLabel("Topic name").fill("news");
  await page.getByRole("button", { name: "Create topic" }).click();
  await page.getByRole("heading", { name: "Topic news", level: 2 }).waitFor();

  for (const [name, queue, filter] of [
    ["all", "fan-all", ""],
    ["sport", "fan-sport", "sport, football"],
  ]) {
    await page.getByLabel("Subscription name").fill(name);
    await page.getByLabel("Queue", { exact: true }).fill(queue);
    await page.getByLabel("Filter tags or binding keys").fill(filter);
    await page.getByRole("button", { name: "Subscribe", exact: true }).click();
    await page.getByRole("status").filter({ hasText: `Subscribed ${queue} as ${name}.` }).waitFor();
  }
  const subscriptions = page.locator("#subscription-table tbody tr");
  await waitForCount(subscriptions, 2);

  // A tag both take, then one only the unfiltered subscription takes.
  for (const [body, tags, copies] of [
    ["goal", "football", "2 copies"],
    ["rain", "weather", "1 copy"],
  ]) {
    await page.getByLabel("Text to publish (UTF-8)").fill(body);
    await page.getByLabel("Tags or routing key").fill(tags);
    await page.getByRole("button", { name: "Publish", exact: true }).click();
    await page.getByRole("status").filter({ hasText: copies }).waitFor();
  }
  await waitForText(page.locator('#topic-stats dd[data-term="Published"]'), "2");
  const sport = page.locator('#subscription-table tbody tr[data-subscription="sport"] td');
  await waitForText(sport.nth(0), "fan-sport");
  await waitForText(sport.nth(2), "1"); // delivered
  await waitForText(sport.nth(3), "1"); // filtered out

  // The copies show in the queues' counters, and the topic in the list.
  await page.getByRole("link", { name: "Back to the list" }).click();
  await waitForText(page.locator('#queue-table tbody tr[data-queue="fan-all"] td[data-field="visible"]'), "2");
  await waitForText(page.locator('#queue-table tbody tr[data-queue="fan-sport"] td[data-field="visible"]'), "1");
  const topicRow = page.locator('#topic-table tbody tr[data-topic="news"]');
  await waitForText(topicRow.locator("td").nth(2), "2");

  // Unsubscribe one, then delete the topic (asked first, its name typed).
  await topicRow.getByRole("link", { name: "news" }).click();
  await waitForCount(subscriptions, 2);
  await page.getByRole("button", { name: "Unsubscribe sport" }).click();
  await page.getByRole("status").filter({ hasText: "Unsubscribed sport." }).waitFor();
  await waitForCount(subscriptions, 1);
  await page.getByRole("button", { name: "Delete topic…" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Type the topic name to confirm").fill("news");
  await dialog.getByRole("button", { name: "Delete topic", exact: true }).click();
  await page.getByRole("status").filter({ hasText: "Deleted topic news." }).waitFor();
  await topicRow.waitFor({ state: "detached" });
  // The copies stay in their queues.
  await waitForText(page.locator('#queue-table tbody tr[data-queue="fan-all"] td[data-field="visible"]'), "2");

  assert.deepEqual(troubles, []);
});

/**
 * A server with an auth file, and a Chromium page on its console (with the token in the tab's
 * session storage unless `token: false`), its script errors and failed requests collected.
 */
async function openConsole(t, { token = true } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "spool-console-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const authFile = join(dir, "principals.toml");
  const digest = createHash("sha256").update(TOKEN).digest("hex");
  writeFileSync(
    authFile,
    `[[principals]]\nname = "console"\ntoken_sha256 = "${digest}"\n` +
      `[[principals.grants]]\nqueues = "*"\nactions = ["send", "receive", "admin"]\n`,
  );
  const server = await startServer(spool.binary, { extraArgs: ["--auth-file", authFile] });
  t.after(() => server.stop());
  const browser = await chromium.launch({ executablePath: browserFound.path, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const troubles = [];
  page.on("pageerror", (error) => troubles.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") troubles.push(`console: ${message.text()}`);
  });
  page.on("requestfailed", (request) => troubles.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
  page.setDefaultTimeout(SHOWN_MS);
  if (token) {
    await page.goto(`${server.endpoint}/console/`);
    await page.evaluate((value) => sessionStorage.setItem("spool.token", value), TOKEN);
  }
  return { server, page, troubles };
}

async function waitForText(locator, text) {
  const deadline = Date.now() + SHOWN_MS;
  let seen;
  while (Date.now() < deadline) {
    seen = await locator.textContent();
    if (seen === text) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`expected ${JSON.stringify(text)}, the page shows ${JSON.stringify(seen)}`);
}

async function waitForCount(locator, count) {
  const deadline = Date.now() + SHOWN_MS;
  while (Date.now() < deadline) {
    if ((await locator.count()) === count) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`expected ${count} rows, the page shows ${await locator.count()}`);
}
