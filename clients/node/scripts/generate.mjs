#!/usr/bin/env node
// Generates src/gen/ (protobuf-es v2 TypeScript) from ../../proto and proto/ with buf.gen.yaml.
//
//   node scripts/generate.mjs           # rewrite src/gen/
//   node scripts/generate.mjs --check   # exit 1 if the committed src/gen/ is not what it writes
//
// buf and protoc-gen-es are the pinned devDependencies, so the output depends only on
// package-lock.json and the protos; no network.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const buf = join(root, "node_modules", ".bin", "buf");
const generated = join(root, "src", "gen");

/** Every file under `dir`, as paths relative to it. */
function files(dir) {
  let found = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) {
      found = found.concat(files(path).map((inner) => join(name, inner)));
    } else {
      found.push(name);
    }
  }
  return found.sort();
}

if (process.argv.includes("--check")) {
  const out = mkdtempSync(join(tmpdir(), "spool-node-gen-"));
  try {
    execFileSync(buf, ["generate", "--output", out], { cwd: root, stdio: "inherit" });
    const fresh = join(out, "src", "gen");
    const want = files(fresh);
    const have = files(generated);
    const stale = [...new Set([...want, ...have])].filter(
      (path) =>
        !want.includes(path) ||
        !have.includes(path) ||
        !readFileSync(join(fresh, path)).equals(readFileSync(join(generated, path))),
    );
    if (stale.length > 0) {
      console.error(`stale in ${relative(process.cwd(), generated)}: ${stale.join(", ")}; run npm run generate`);
      process.exit(1);
    }
    console.log("generated code is current");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
} else {
  // Cleared first, so a file the protos no longer produce does not linger.
  rmSync(generated, { recursive: true, force: true });
  execFileSync(buf, ["generate"], { cwd: root, stdio: "inherit" });
  console.log(`wrote ${relative(process.cwd(), generated)}`);
}
