// Starts a real `spool serve` for the tests: the binary in $SPOOL_BIN (scripts/test sets it to
// the one cargo built), else target/debug/spool (under $CARGO_TARGET_DIR if set). Without
// either the tests fail under CI=true and are skipped otherwise; a SPOOL_BIN that names no
// file always fails them (whoever set it meant that binary to be tested).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const STARTUP_MS = 30_000;

/** The server binary, or a reason to skip (outside CI); throws when the tests must fail. */
export function serverBinary() {
  const given = process.env.SPOOL_BIN;
  if (given) {
    if (!existsSync(given)) throw new Error(`SPOOL_BIN is ${given}, which is not a file`);
    return { binary: given };
  }
  const binary = join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug", "spool");
  if (existsSync(binary)) return { binary };
  const reason = `no spool binary at ${binary}: run cargo build, or set SPOOL_BIN`;
  if (process.env.CI === "true") throw new Error(reason);
  return { skip: reason };
}

/** A free port on 127.0.0.1, for a server that must start on a port known in advance. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts `spool serve` on `listen` (default 127.0.0.1:0) with a fresh data directory and
 * metrics on 127.0.0.1:0; resolves once it is ready, with its endpoints and stop().
 */
export async function startServer(binary, { listen = "127.0.0.1:0", dataDir: given, extraArgs = [] } = {}) {
  // A data directory the caller gives is the caller's to remove (it outlives this server).
  const dataDir = given ?? mkdtempSync(join(tmpdir(), "spool-node-test-"));
  const removeData = () => given === undefined && rmSync(dataDir, { recursive: true, force: true });
  const child = spawn(
    binary,
    ["serve", "--listen", listen, "--metrics-listen", "127.0.0.1:0", "--data-dir", dataDir, ...extraArgs],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stderr.on("data", (chunk) => {
    log = (log + chunk).slice(-20_000);
  });
  const exited = new Promise((resolveExit) => child.once("exit", (code, signal) => resolveExit({ code, signal })));
  const lines = createInterface({ input: child.stdout });
  const started = new Promise((resolveStart, reject) => {
    let addresses;
    lines.on("line", (line) => {
      let event;
      try {
        event = JSON.parse(line);
      } catch {
        return; // not one of the machine-readable lines
      }
      if (event.event === "listening") addresses = event;
      if (event.event === "ready" && addresses) resolveStart(addresses);
    });
    exited.then(({ code }) => reject(new Error(`spool exited (code ${code}) before it was ready:\n${log}`)));
    setTimeout(() => reject(new Error(`spool was not ready within ${STARTUP_MS} ms:\n${log}`)), STARTUP_MS).unref();
  });
  let addresses;
  try {
    addresses = await started;
  } catch (error) {
    child.kill("SIGKILL");
    removeData();
    throw error;
  }
  return {
    endpoint: `http://${addresses.grpc}`,
    metrics: `http://${addresses.metrics}/metrics`,
    log: () => log,
    /** SIGTERM (a graceful stop), then the data directory is removed unless the caller gave it. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
      removeData();
    },
  };
}
