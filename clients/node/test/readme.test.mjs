// The README's example, run as written against a real server, so the documentation cannot
// drift from the client.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { test } from "node:test";

import { serverBinary, startServer } from "./server.mjs";

const found = serverBinary();

test("the README example runs and prints what its comments say", { skip: found.skip }, async () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const block = /<!-- example -->\n```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "README.md has no <!-- example --> js block");
  // Inside the package, so that `import ... from "@spool/client"` resolves to this package.
  const program = new URL(`../readme-example-${process.pid}.mjs`, import.meta.url);
  writeFileSync(program, block[1]);
  const server = await startServer(found.binary);
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [program.pathname], {
      env: { ...process.env, SPOOL_ENDPOINT: server.endpoint },
      timeout: 30_000,
    });
    assert.equal(stdout, "order 1\norder 2\nNOT_FOUND QUEUE_NOT_FOUND 4440\n");
  } finally {
    rmSync(program, { force: true });
    await server.stop();
  }
});
